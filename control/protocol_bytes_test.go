package control

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestPolicyBytesExact: policy text that is not UTF-8 crosses the protocol
// byte for byte in PolicyBytes (a JSON string would carry U+FFFD instead),
// and a reply of an older daemon (only "policy") still decodes.
func TestPolicyBytesExact(t *testing.T) {
	tests := []struct {
		name string
		wire func() ([]byte, error)
		want []byte
	}{
		{"invalid utf-8", func() ([]byte, error) {
			text := "measure fsname=\xff\xfe\x80 \n"
			return json.Marshal(&Response{Policy: text, PolicyBytes: []byte(text)})
		}, []byte("measure fsname=\xff\xfe\x80 \n")},
		{"old daemon", func() ([]byte, error) { return []byte(`{"ok":true,"policy":"measure \n"}`), nil }, nil},
	}
	for _, tt := range tests {
		data, err := tt.wire()
		if err != nil {
			t.Fatal(err)
		}
		var resp Response
		if err := json.Unmarshal(data, &resp); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !bytes.Equal(resp.PolicyBytes, tt.want) {
			t.Errorf("%s: PolicyBytes %q, want %q", tt.name, resp.PolicyBytes, tt.want)
		}
		if tt.want == nil && resp.Policy != "measure \n" {
			t.Errorf("%s: Policy %q", tt.name, resp.Policy)
		}
		if tt.want != nil && resp.Policy == string(tt.want) {
			t.Errorf("%s: the JSON string kept invalid UTF-8 (test premise wrong)", tt.name)
		}
	}
}
