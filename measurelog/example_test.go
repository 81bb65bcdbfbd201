package measurelog_test

import (
	"bytes"
	"fmt"
	"io"

	"github.com/imafs/imafs/measurelog"
)

// A list as a container's ascii_runtime_measurements would show it, read
// back from its binary form and replayed into PCR 10.
func Example() {
	list := measurelog.NewList()

	boot, _ := measurelog.NewBootAggregate(measurelog.TemplateIMANG, nil, measurelog.SHA256)
	list.Append(boot)
	e, err := measurelog.NewEntry(measurelog.TemplateIMANS, measurelog.DefaultPCR, measurelog.Measurement{
		FileDigest: measurelog.SHA256.Sum([]byte("#!/bin/sh\n")),
		FileAlgo:   measurelog.SHA256,
		Name:       "/usr/local/bin/my script",
		Namespace:  "web-1",
	})
	if err != nil {
		panic(err)
	}
	list.Append(e)
	fmt.Println("added again:", list.Append(e))

	ascii := make([]byte, list.Size(measurelog.ASCII, measurelog.SHA1))
	list.ReadAt(ascii, 0, measurelog.ASCII, measurelog.SHA1)
	fmt.Print(string(ascii))

	var bin bytes.Buffer
	io.Copy(&bin, io.NewSectionReader(readerAt{list}, 0, list.Size(measurelog.Binary, measurelog.SHA256)))
	entries, err := measurelog.DecodeBinary(bin.Bytes(), measurelog.SHA256)
	fmt.Println(len(entries), "entries decoded, error:", err)
	pcrs := measurelog.Replay(entries, measurelog.SHA256)
	fmt.Println("PCR-10 matches:", bytes.Equal(pcrs.Value(measurelog.SHA256, 10), list.PCR(measurelog.SHA256, 10)))
	// Output:
	// added again: false
	// 10 0adefe762c149c7cec19da62f0da1297fcfbffff ima-ng sha256:0000000000000000000000000000000000000000000000000000000000000000 boot_aggregate
	// 10 a8df15b77ab9113bc3d5d2cfb7705a02dc55bbd1 ima-ns sha256:a8076d3d28d21e02012b20eaf7dbf75409a6277134439025f282e368e3305abf /usr/local/bin/my_script web-1
	// 2 entries decoded, error: <nil>
	// PCR-10 matches: true
}

// readerAt adapts a List's sha256 binary rendering to io.ReaderAt.
type readerAt struct{ l *measurelog.List }

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	return r.l.ReadAt(p, off, measurelog.Binary, measurelog.SHA256)
}
