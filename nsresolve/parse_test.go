package nsresolve

import (
	"strings"
	"testing"
)

func TestParseStatus(t *testing.T) {
	good := "Name:\tsleep\nTgid:\t42\nPid:\t43\nUid:\t1000\t100000\t1000\t1000\nGid:\t5\t6\t5\t5\nCapEff:\t000001ffffffffff\n"
	for _, tc := range []struct {
		name, in string
		want     *Caller
	}{
		{"good", good, &Caller{PID: 42, UID: 1000, EUID: 100000, GID: 5, EGID: 6, CapEff: 0x1ffffffffff}},
		{"no trailing newline", strings.TrimSuffix(good, "\n"), &Caller{PID: 42, UID: 1000, EUID: 100000, GID: 5, EGID: 6, CapEff: 0x1ffffffffff}},
		{"missing CapEff", strings.Replace(good, "CapEff", "CapPrm", 1), nil},
		{"missing Tgid", strings.Replace(good, "Tgid", "Ngid", 1), nil},
		{"bad Tgid", strings.Replace(good, "\t42", "\tx", 1), nil},
		{"short Uid", strings.Replace(good, "1000\t100000\t1000\t1000", "7", 1), nil},
		{"uid overflow", strings.Replace(good, "100000", "4294967296", 1), nil},
		{"bad CapEff", strings.Replace(good, "000001ffffffffff", "zz", 1), nil},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Caller
			err := parseStatus([]byte(tc.in), &c)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("no error, got %+v", c)
				}
				return
			}
			if err != nil || c != *tc.want {
				t.Fatalf("got %+v, %v; want %+v", c, err, *tc.want)
			}
		})
	}
}

func TestMapUp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		m      string
		host   uint32
		inside uint32
		ok     bool
		err    bool
	}{
		{"initial ns", "         0          0 4294967295\n", 1000, 1000, true, false},
		{"container root", "0 100000 65536\n", 100000, 0, true, false},
		{"container user", "0 100000 65536\n", 101000, 1000, true, false},
		{"host root unmapped", "0 100000 65536\n", 0, 0, false, false},
		{"past the range", "0 100000 65536\n", 165536, 0, false, false},
		{"second range", "0 100000 1\n1 200001 10\n", 200005, 5, true, false},
		{"garbage", "0 x 1\n", 5, 0, false, true},
		{"two fields", "0 1\n", 5, 0, false, true},
		{"empty", "", 0, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, ok, err := mapUp([]byte(tc.m), tc.host)
			if (err != nil) != tc.err || ok != tc.ok || in != tc.inside {
				t.Fatalf("got %d, %v, %v; want %d, %v, err=%v", in, ok, err, tc.inside, tc.ok, tc.err)
			}
		})
	}
}

// FuzzParseProc: /proc text parsing never panics, and what it accepts is
// consistent (a parsed uid map translates within its ranges).
func FuzzParseProc(f *testing.F) {
	f.Add([]byte("Tgid:\t42\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n"), uint32(100000))
	f.Add([]byte("0 100000 65536\n"), uint32(100005))
	f.Add([]byte("         0          0 4294967295\n"), uint32(7))
	f.Add([]byte("Uid:\n:\n\n"), uint32(0))
	f.Fuzz(func(t *testing.T, text []byte, uid uint32) {
		var c Caller
		_ = parseStatus(text, &c)
		inside, ok, err := mapUp(text, uid)
		if err != nil && ok {
			t.Fatalf("mapUp: ok with error %v", err)
		}
		if !ok && inside != 0 {
			t.Fatalf("mapUp: not mapped but inside=%d", inside)
		}
	})
}
