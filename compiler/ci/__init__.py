"""GitHub provenance: which reviewed plan a merge carries, proven through the API.

The plan reviewers see is computed by the *trusted plan* workflow, defined on the
default branch and triggered by ``workflow_run`` after a pull request's own ``pki plan``
run. Its artifact (``pkic-trusted-plan``) records the pull request's number, head SHA
and head repository beside the plan's reviewed digest, and its comment on the pull
request names the run (``<!-- pkic-plan run-id=123 -->``). After the merge,
:func:`reviewed_digest` follows that comment to the run, checks through the API that the
run is the default branch's trusted plan workflow and concluded successfully, and reads
the digest from the run's own artifact, which must name the merged pull request and its
final head. Comment text is never the source of the digest; anything missing or
different is refused.

Only the standard library (urllib, json, zipfile). Responses, artifact archives and
their members are read with size caps; the token is sent only to the API host (never
along a redirect) and never appears in an error. Nothing here prints: the CLI does.
"""

from compiler.ci.api import (
    ARTIFACT,
    BOT,
    DEFAULT_API,
    DEFAULT_SERVER,
    PROVENANCE,
    TRUSTED_WORKFLOW,
    GitHub,
    check_repo,
    check_sha,
    refuse,
    same_repo,
)
from compiler.ci.pulls import PullRequest, check_comments, comment_body, find_pr, get_pull, post_comment, pr_of_workflow_run, record
from compiler.ci.reviewed import Reviewed, override, reviewed_digest

__all__ = [
    "ARTIFACT",
    "BOT",
    "DEFAULT_API",
    "DEFAULT_SERVER",
    "PROVENANCE",
    "TRUSTED_WORKFLOW",
    "GitHub",
    "PullRequest",
    "Reviewed",
    "check_comments",
    "check_repo",
    "check_sha",
    "comment_body",
    "find_pr",
    "get_pull",
    "override",
    "post_comment",
    "pr_of_workflow_run",
    "record",
    "refuse",
    "reviewed_digest",
    "same_repo",
]
