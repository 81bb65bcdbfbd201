module github.com/imafs/imafs

go 1.26.8

require (
	github.com/google/go-tpm-tools v0.4.10 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
