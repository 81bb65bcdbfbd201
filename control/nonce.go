package control

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// ParseNonce decodes the hex nonce of a quote request (imafs quote
// --nonce): 1 to 64 bytes.
func ParseNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("--nonce HEX is required")
	}
	n, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("--nonce: %w", err)
	}
	if len(n) == 0 || len(n) > 64 {
		return nil, fmt.Errorf("--nonce: %d bytes, want 1 to 64", len(n))
	}
	return n, nil
}
