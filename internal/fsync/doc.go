// Package fsync holds the durability steps that imafs's persistent files
// share (measurelog's journals, imans's state directory): after a file is
// created or renamed, its directory must be fsynced too, or a crash can
// lose the new name even though the file's data is on disk.
package fsync
