package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelConfigAssumptions checks the golden kernel's configuration for
// every option this package's behaviour depends on.
func TestKernelConfigAssumptions(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(goldenDir, "kernel-config-6.12"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			set[k] = v == "y"
		}
	}
	for opt, want := range map[string]bool{
		"CONFIG_IMA_MEASURE_ASYMMETRIC_KEYS": true,  // func=KEY_CHECK, keyrings=
		"CONFIG_IMA_WRITE_POLICY":            true,  // appraise_tcb's POLICY_CHECK rule
		"CONFIG_IMA_READ_POLICY":             true,  // read-back exists
		"CONFIG_IMA_LSM_RULES":               false, // LSM conditions are inactive
		"CONFIG_IMA_APPRAISE_MODSIG":         false, // imasig|modsig rejected by default
		"CONFIG_IMA_APPRAISE_SIGNED_INIT":    false, // appraise_tcb's "appraise fowner=0" without imasig
		"CONFIG_IMA_ARCH_POLICY":             false, // no arch rules in BuiltIn
		"CONFIG_CRYPTO_SHA1":                 true,  // Kernel612HashAlgos
		"CONFIG_CRYPTO_SHA256":               true,
		"CONFIG_CRYPTO_SHA512":               false,
		"CONFIG_CRYPTO_MD5":                  false,
		"CONFIG_CRYPTO_SM3_GENERIC":          false,
	} {
		if set[opt] != want {
			t.Errorf("%s=%v, this package assumes %v", opt, set[opt], want)
		}
	}
	for _, opt := range []string{"MODULE", "FIRMWARE", "KEXEC", "POLICY"} {
		if set["CONFIG_IMA_APPRAISE_REQUIRE_"+opt+"_SIGS"] {
			t.Errorf("build-time appraise rule for %s is not in BuiltIn", opt)
		}
	}
}
