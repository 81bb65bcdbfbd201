package measurelog

import "fmt"

// Xattr is one extended attribute of a measured file, as the evm-sig
// template's xattrnames, xattrlengths and xattrvalues fields list it.
type Xattr struct {
	Name  string
	Value []byte
}

// EVMXattrNames are the extended attributes the xattrnames, xattrlengths
// and xattrvalues fields list, in the kernel's order: its EVM-protected
// names (evm_config_default_xattrnames, 6.12). evm_read_protected_xattrs
// reads each one, enabled in the build or not, and lists those the file has.
var EVMXattrNames = []string{
	"security.selinux",
	"security.SMACK64",
	"security.SMACK64EXEC",
	"security.SMACK64TRANSMUTE",
	"security.SMACK64MMAP",
	"security.apparmor",
	"security.ima",
	"security.capability",
}

// XattrEVM is the name of the EVM extended attribute, whose portable
// signature (type 0x05) the evmsig field and the sig field (when
// security.ima is not a signature) carry.
const XattrEVM = "security.evm"

// Needs is what a template asks a source to collect from a file besides
// the digest in its file algorithm and its name.
type Needs struct {
	// SHA1 asks for a SHA-1 digest of the file as well (Measurement's
	// DigestSHA1): the template has a "d" field, which holds a SHA-1, and
	// the file algorithm is another one. The kernel's ima_eventdigest_init
	// hashes the file again in this case.
	SHA1 bool
	// EVMSig asks for security.evm (Measurement.EVMSig): a "sig" or
	// "evmsig" field.
	EVMSig bool
	// Xattrs asks for the file's EVMXattrNames (Measurement.Xattrs): an
	// "xattrnames", "xattrlengths" or "xattrvalues" field.
	Xattrs bool
}

// TemplateNeeds returns what template (a builtin name or a custom format)
// needs from a file measured in fileAlgo.
func TemplateNeeds(template string, fileAlgo Algo) (Needs, error) {
	t, err := lookup(template)
	if err != nil {
		return Needs{}, fmt.Errorf("template needs: %w", err)
	}
	var n Needs
	for _, id := range t.ids {
		switch id {
		case "d":
			n.SHA1 = n.SHA1 || fileAlgo != SHA1
		case "sig", "evmsig":
			n.EVMSig = true
		case "xattrnames", "xattrlengths", "xattrvalues":
			n.Xattrs = true
		}
	}
	return n, nil
}

// HashAlgos returns the algorithms a source hashes a file in for template:
// fileAlgo, then SHA-1 when the template needs it too (Needs.SHA1). One
// pass over the file can feed them all.
func HashAlgos(template string, fileAlgo Algo) ([]Algo, error) {
	n, err := TemplateNeeds(template, fileAlgo)
	if err != nil {
		return nil, err
	}
	if n.SHA1 {
		return []Algo{fileAlgo, SHA1}, nil
	}
	return []Algo{fileAlgo}, nil
}

// xattrFields renders the xattrnames, xattrlengths and xattrvalues fields
// as evm_read_protected_xattrs does: names joined by '|' ending in one
// NUL, little-endian u32 lengths, values back to back; all empty when the
// file has none of the names.
func xattrFields(xs []Xattr) (names, lengths, values []byte) {
	for _, x := range xs {
		if len(names) > 0 {
			names[len(names)-1] = '|'
		}
		names = append(append(names, x.Name...), 0)
		lengths = append(lengths, byte(len(x.Value)), byte(len(x.Value)>>8), byte(len(x.Value)>>16), byte(len(x.Value)>>24))
		values = append(values, x.Value...)
	}
	return names, lengths, values
}
