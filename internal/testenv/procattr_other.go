//go:build !linux

package testenv

import "syscall"

// childProcAttr: Pdeathsig exists only on Linux.
func childProcAttr() *syscall.SysProcAttr { return nil }
