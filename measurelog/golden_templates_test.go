package measurelog

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// goldenTemplates are the templates of testdata/kernel-6.12/templates, in
// the order of the QEMU guest's rules (owner 4300 + index).
var goldenTemplates = []string{
	TemplateIMA, TemplateIMANG, TemplateIMASig, TemplateIMANGv2, TemplateIMASigv2,
	TemplateIMABuf, TemplateIMAModsig, TemplateEVMSig, TemplateIMANSReg,
}

// TestGoldenTemplates rebuilds every entry the patched 6.12 kernel wrote
// for one FILE_CHECK rule per template (kernel-patches/test/guest/init,
// templates_stage; ima_hash=sha256, no EVM, no modsig) from what the guest
// gave the file: its content, owner, mode, security.ima and security.evm.
// The records must be equal byte for byte: the ima template's "d" is the
// file's SHA-1, ima-buf's buffer and ima-modsig's modsig fields are empty,
// evm-sig's xattr fields are empty (the kernel has no EVM).
func TestGoldenTemplates(t *testing.T) {
	sig, _ := hex.DecodeString("030204010203040002abcd")
	evm, _ := hex.DecodeString("050204050607080002ef01")
	want, err := DecodeBinary(readGolden(t, "templates", "binary_runtime_measurements"), SHA1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i, k := range want {
		name := k.Name()
		tmpl := strings.TrimPrefix(name, "/ktest/tmpl-")
		if k.Template != tmpl {
			t.Fatalf("record %d: %s entry of %s", i, k.Template, name)
		}
		idx := -1
		for j, g := range goldenTemplates {
			if g == tmpl {
				idx = j
			}
		}
		content := []byte("template " + tmpl + "\n")
		s1, s256 := sha1.Sum(content), sha256.Sum256(content)
		m := Measurement{
			FileDigest: s256[:], FileAlgo: SHA256, DigestSHA1: s1[:], Name: name,
			Sig: sig, EVMSig: evm, UID: 4300 + uint32(idx), GID: 0, Mode: 0o100644,
		}
		if tmpl == TemplateIMANSReg {
			m.Namespace = string(cString(k.Fields[2])) // the kernel's tag ("" for the host)
		}
		e, err := NewEntry(tmpl, k.PCR, m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, w := e.AppendBinary(nil, SHA1), k.AppendBinary(nil, SHA1); !bytes.Equal(got, w) {
			t.Errorf("%s: rebuilt\n%s\nkernel\n%s", tmpl, e.AppendASCII(nil, SHA1), k.AppendASCII(nil, SHA1))
		}
		seen[tmpl]++
	}
	for _, g := range goldenTemplates {
		if seen[g] == 0 {
			t.Errorf("no kernel record of template %s", g)
		}
	}
}
