package fanotify

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// idMap maps host ids into a user namespace (the inverse of its uid_map).
// A nil idMap is the identity (the container shares the host user ns).
type idMap []idRange

type idRange struct{ inside, outside, count uint32 }

// overflowID is what the kernel shows for an unmapped id (overflowuid).
const overflowID = 65534

func readIDMap(path string) (idMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read id map: %w", err)
	}
	var m idMap
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return nil, fmt.Errorf("read id map %s: malformed line %q", path, sc.Text())
		}
		var v [3]uint32
		for i := range f {
			n, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("read id map %s: %w", path, err)
			}
			v[i] = uint32(n)
		}
		m = append(m, idRange{v[0], v[1], v[2]})
	}
	// The initial user namespace maps everything to itself.
	if len(m) == 1 && m[0].inside == 0 && m[0].outside == 0 && m[0].count == 4294967295 {
		return nil, nil
	}
	return m, nil
}

// toNS returns how the namespace sees host id.
func (m idMap) toNS(host uint32) uint32 {
	if m == nil {
		return host
	}
	for _, r := range m {
		if host >= r.outside && uint64(host) < uint64(r.outside)+uint64(r.count) {
			return r.inside + (host - r.outside)
		}
	}
	return overflowID
}

// IDMap maps host ids into a user namespace, as the namespace's
// /proc/PID/uid_map (or gid_map) says; the zero IDMap is the identity.
type IDMap struct{ m idMap }

// ReadIDMap reads a uid_map or gid_map file.
func ReadIDMap(path string) (IDMap, error) {
	m, err := readIDMap(path)
	return IDMap{m}, err
}

// ToNS returns how the namespace sees host id (overflowuid when unmapped).
func (m IDMap) ToNS(host uint32) uint32 { return m.m.toNS(host) }
