package state

import (
	"os"
	"syscall"
)

// datasync is what bbolt calls at commit on Linux.
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
