// Package xattr reads extended attributes of an open file whatever their
// size.
package xattr

import "golang.org/x/sys/unix"

// Get returns the value of the extended attribute name of the file open
// at fd, growing its buffer when the kernel answers ERANGE (the value
// grew between the size query and the read).
func Get(fd int, name string) ([]byte, error) {
	buf := make([]byte, 512)
	for {
		n, err := unix.Fgetxattr(fd, name, buf)
		if err == unix.ERANGE {
			sz, err := unix.Fgetxattr(fd, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
