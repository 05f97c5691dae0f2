package testenv

import "syscall"

// childProcAttr makes a long-running child (the registry) die with the test
// process, so that a killed or timed-out test run leaves no server behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
