"""pkic: a GitOps, declarative PKI compiler (pki.yaml -> plan -> apply)."""

__version__ = "0.1.0"
