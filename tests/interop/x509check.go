// x509check: Go's crypto/x509 path validation, for the interop suite.
//
// Standard library only (run with GO111MODULE=off GOTOOLCHAIN=local: nothing is
// downloaded). Reads a JSON request on stdin:
//
//	{"roots": "bundle.pem", "cases": [{"id": "...", "chain": "chain.pem", "usage": "server"|"client", "dns": "name"}]}
//
// where chain.pem is the certificate followed by its intermediates, and writes
// {"<id>": {"ok": true|false, "error": "..."}} on stdout. crypto/x509 does no
// revocation checking; name constraints, path lengths and extended key usages it does.
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
)

type verifyCase struct {
	ID    string `json:"id"`
	Chain string `json:"chain"`
	Usage string `json:"usage"`
	DNS   string `json:"dns"`
}

type request struct {
	Roots string       `json:"roots"`
	Cases []verifyCase `json:"cases"`
}

type result struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func certs(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
}

func check(roots *x509.CertPool, c verifyCase) result {
	chain, err := certs(c.Chain)
	if err != nil {
		return result{Error: err.Error()}
	}
	if len(chain) == 0 {
		return result{Error: "no certificate in " + c.Chain}
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter}
	switch c.Usage {
	case "server":
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		opts.DNSName = c.DNS
	case "client":
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return result{Error: "unknown usage " + c.Usage}
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return result{Error: err.Error()}
	}
	return result{OK: true}
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	rootCerts, err := certs(req.Roots)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	for _, r := range rootCerts {
		roots.AddCert(r)
	}
	out := map[string]result{}
	for _, c := range req.Cases {
		out[c.ID] = check(roots, c)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
