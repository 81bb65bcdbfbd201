package policy

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestSessionWrite(t *testing.T) {
	files := map[string][]byte{
		"/etc/ima/good":      []byte("measure func=BPRM_CHECK\n\n# c\nmeasure func=FILE_MMAP\n"),
		"/etc/ima/nonl":      []byte("measure func=BPRM_CHECK\nmeasure func=MODULE_CHECK"),
		"/etc/ima/bad":       []byte("measure\nmeasure func=BOGUS\n"),
		"/etc/ima/nul":       []byte("measure\nmeasure\x00func=BOGUS\n"),
		"/etc/ima/empty":     {},
		"/etc/ima/commented": []byte("# nothing\n"),
	}
	readFile := func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		return nil, os.ErrNotExist
	}
	type write struct {
		data string
		off  int64
		n    int   // kernel count
		err  error // errors.Is target
	}
	tests := []struct {
		name      string
		signed    bool
		writes    []write
		commitErr error
		want      string // committed policy
	}{
		{name: "one line", writes: []write{{"measure func=BPRM_CHECK\n", 0, 24, nil}}, want: "measure func=BPRM_CHECK \n"},
		{name: "no newline: count+1", writes: []write{{"measure func=BPRM_CHECK", 0, 24, nil}}, want: "measure func=BPRM_CHECK \n"},
		{name: "first line only", writes: []write{{"measure\ndont_measure fsmagic=9fa0\n", 0, 8, nil}, {"dont_measure fsmagic=9fa0\n", 0, 26, nil}},
			want: "measure \ndont_measure fsmagic=0x9fa0 \n"},
		{name: "NUL ends the string", writes: []write{{"measure\x00garbage\n", 0, 8, nil}}, want: "measure \n"},
		{name: "cut to PAGE_SIZE-1", writes: []write{{"measure" + strings.Repeat(" ", 5000), 0, PageSize, nil}}, want: "measure \n"},
		{name: "offset", writes: []write{{"measure\n", 1, 0, ErrInvalid}}, commitErr: ErrFailed},
		{name: "bad rule fails the session", writes: []write{{"measure\n", 0, 8, nil}, {"measure uid=x\n", 0, 0, ErrInvalid}, {"hash\n", 0, 5, nil}},
			commitErr: ErrFailed},
		{name: "CRLF", writes: []write{{"measure\r\n", 0, 0, ErrInvalid}}, commitErr: ErrFailed},
		{name: "comment only", writes: []write{{"# x\n", 0, 4, nil}, {"\n", 0, 1, nil}}, commitErr: ErrNoRules},
		{name: "no write", commitErr: ErrNoRules},
		{name: "load by path", writes: []write{{"/etc/ima/good\nignored", 0, 21, nil}},
			want: "measure func=BPRM_CHECK \nmeasure func=MMAP_CHECK \n"},
		{name: "load: last line without newline", writes: []write{{"/etc/ima/nonl\n", 0, 0, ErrInvalid}}, commitErr: ErrFailed},
		{name: "load: bad rule", writes: []write{{"/etc/ima/bad\n", 0, 0, ErrInvalid}}, commitErr: ErrFailed},
		{name: "load: NUL byte", writes: []write{{"/etc/ima/nul\n", 0, 0, ErrInvalid}}, commitErr: ErrFailed},
		{name: "load: missing file", writes: []write{{"/etc/ima/missing\n", 0, 0, os.ErrNotExist}}, commitErr: ErrFailed},
		{name: "load: empty file", writes: []write{{"/etc/ima/empty\n", 0, 15, nil}}, commitErr: ErrNoRules},
		{name: "load: comments only", writes: []write{{"/etc/ima/commented\n", 0, 19, nil}}, commitErr: ErrNoRules},
		{name: "signed policy required", signed: true, writes: []write{{"measure\n", 0, 0, ErrAccess}}, commitErr: ErrFailed},
		{name: "signed policy: path allowed", signed: true, writes: []write{{"/etc/ima/good\n", 0, 14, nil}},
			want: "measure func=BPRM_CHECK \nmeasure func=MMAP_CHECK \n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Session{ReadFile: readFile, RequireSignedPolicy: tc.signed}
			for i, w := range tc.writes {
				n, err := s.Write([]byte(w.data), w.off)
				if w.err != nil {
					if !errors.Is(err, w.err) || n != 0 {
						t.Fatalf("write %d: %d, %v; want error %v", i, n, err, w.err)
					}
					continue
				}
				if err != nil || n != w.n {
					t.Fatalf("write %d: %d, %v; want %d", i, n, err, w.n)
				}
			}
			p, err := s.Commit()
			if tc.commitErr != nil {
				if !errors.Is(err, tc.commitErr) || p != nil {
					t.Fatalf("Commit = %v, %v; want %v", p, err, tc.commitErr)
				}
				return
			}
			if err != nil || p.String() != tc.want {
				t.Fatalf("Commit = %q, %v; want %q", p.String(), err, tc.want)
			}
			if _, err := s.Commit(); !errors.Is(err, ErrCommitted) {
				t.Errorf("second Commit: %v", err)
			}
			if _, err := s.Write([]byte("measure\n"), 0); !errors.Is(err, ErrCommitted) {
				t.Errorf("Write after Commit: %v", err)
			}
		})
	}
}

func TestSessionParseErrorDetails(t *testing.T) {
	s := &Session{}
	s.Write([]byte("measure\n"), 0)
	s.Write([]byte("# c\n"), 0)
	_, err := s.Write([]byte("measure func=NOPE\n"), 0)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 3 || pe.Token != "func=NOPE" || !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v (%+v)", err, pe)
	}
	if !errors.Is(s.Failed(), ErrInvalid) {
		t.Errorf("Failed() = %v", s.Failed())
	}
}

func TestSessionDefaultPolicyLSM(t *testing.T) {
	s := &Session{Options: ParseOptions{DefaultPolicyActive: true}}
	if _, err := s.Write([]byte("measure obj_type=foo_t\n"), 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("LSM rule under the default policy: %v", err)
	}
	s = &Session{}
	if n, err := s.Write([]byte("measure obj_type=foo_t\n"), 0); err != nil || n != 23 {
		t.Fatalf("LSM rule under a custom policy: %d, %v", n, err)
	}
	p, err := s.Commit()
	if err != nil || len(p) != 1 || p.String() != "" {
		t.Fatalf("Commit = %q, %v: want one rule that is not shown", p.String(), err)
	}
}

// TestSessionWriteSequential: a FUSE server's offsets advance by what it
// returns; sequential writes map to the kernel's position 0.
func TestSessionWriteSequential(t *testing.T) {
	s := &Session{}
	data := []byte("measure func=BPRM_CHECK\nmeasure func=MMAP_CHECK")
	off := int64(0)
	for len(data) > 0 {
		n, err := s.WriteSequential(data, off)
		if err != nil {
			t.Fatal(err)
		}
		if n > len(data) {
			t.Fatalf("count %d > %d", n, len(data))
		}
		data, off = data[n:], off+int64(n)
	}
	if _, err := s.WriteSequential([]byte("measure\n"), off+3); !errors.Is(err, ErrInvalid) {
		t.Errorf("write past the position: %v", err)
	}
	if _, err := s.Commit(); !errors.Is(err, ErrFailed) {
		t.Errorf("Commit after a bad write: %v", err)
	}

	s = &Session{}
	if _, err := s.WriteSequential([]byte("measure\n"), 5); !errors.Is(err, ErrInvalid) {
		t.Errorf("first write at 5: %v", err)
	}
}

func TestSessionLoadErrorLine(t *testing.T) {
	s := &Session{ReadFile: func(string) ([]byte, error) { return []byte("# c\nmeasure\nmeasure uid=x\n"), nil }}
	s.Write([]byte("measure\n"), 0)
	_, err := s.Write([]byte("/etc/policy\n"), 0)
	// The line is named, its content is not (errors are logged; the file
	// may be one only the writer may read).
	if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), `policy load "/etc/policy": line 3: `) || strings.Contains(err.Error(), "uid=x") {
		t.Fatalf("error %v", err)
	}
}
