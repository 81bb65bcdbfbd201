package imans

import (
	"bytes"
	"testing"

	"github.com/imafs/imafs/measurelog"
	"github.com/imafs/imafs/policy"
)

// TestMeasureDigest: a digest computed elsewhere (the BPF LSM mmap source)
// is recorded as MeasureFile would record the file's: under the rule's
// template, only when a measure rule applies; a digest of the wrong size
// or one the template cannot carry is an error, and nothing is recorded.
func TestMeasureDigest(t *testing.T) {
	sum := measurelog.SHA256.Sum([]byte("library"))
	tests := []struct {
		name    string
		policy  string
		digest  []byte
		wantErr bool
		listed  bool
	}{
		{"measured", "measure func=MMAP_CHECK mask=MAY_EXEC", sum, false, true},
		{"not in policy", "measure func=BPRM_CHECK", sum, false, false},
		{"short digest", "measure func=MMAP_CHECK", sum[:20], true, false},
		{"ima template wants sha1", "measure func=MMAP_CHECK template=ima", sum, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := policy.Parse(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewRegistry(Options{HostPolicy: rules})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			host := r.Host()
			before := host.List.Len()
			ev := policy.Event{Func: policy.MMAPCheck, Mask: policy.MayExec}
			d, err := r.MeasureDigest(host, ev, measurelog.SHA256, tt.digest, FileAttrs{UID: 7, Mode: 0o100755}, "/usr/lib/libx.so")
			if (err != nil) != tt.wantErr {
				t.Fatalf("MeasureDigest: %v, want error %v", err, tt.wantErr)
			}
			if got := host.List.Len() - before; got != map[bool]int{true: 1, false: 0}[tt.listed] {
				t.Fatalf("%d entries recorded, want listed=%v (decision %v)", got, tt.listed, d.Actions)
			}
			if !tt.listed {
				return
			}
			e := host.List.Entry(host.List.Len() - 1)
			algo, got, err := e.FileDigest()
			if err != nil || algo != "sha256" || !bytes.Equal(got, sum) || e.Name() != "/usr/lib/libx.so" || e.Template != "ima-ng" {
				t.Errorf("entry %s %s:%x %q (%v), want ima-ng sha256:%x /usr/lib/libx.so", e.Template, algo, got, e.Name(), err, sum)
			}
		})
	}
}
