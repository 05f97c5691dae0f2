// Package testenv holds helpers for nixoci's conformance tests, which run
// against real components started by the tests themselves: the real Nix client
// (daemon-less local store, run as root), a real registry (docker-registry,
// i.e. distribution 2.8), the real oras CLI and friends.
//
// The helpers follow a few rules:
//
//   - A missing external program makes the test skip with a message naming it
//     (see [Tool]), unless NIXOCI_REQUIRE_TOOLS=1 is set, which turns the skip
//     into a failure so that CI never skips silently.
//   - No sleeps stand in for readiness: servers are polled with a deadline
//     (see [WaitHTTP]).
//   - Every failure message names what failed, with the command line, its
//     exit status and its stderr (see [Run]).
//
// One file per purpose:
//
//	tool.go          Tool: find an external program, skip or fail if missing
//	run.go           NixEnv, Run, RunErr, Cmd, RunCmd, RunCmdErr
//	fixture.go       Fixture, BuildFixture, BuildDerivation
//	keys.go          KeyPair, GenerateKey
//	store.go         NewStoreDir, NixCopyFrom
//	trees.go         DiffTrees, TreesEqual
//	registry.go      Registry, RegistryOptions, StartRegistry
//	registrygc.go    Registry.GarbageCollect, BlobBytes, SetDeletes
//	dockerconfig.go  DockerConfig, DockerConfigJSON
//	tokenserver.go   TokenServer, TokenOptions, StartTokenServer (token auth)
//	credhelper.go    CredentialHelper (a docker-credential-NAME script)
//	nginx.go         NginxProxy, StartNginxProxy (a proxy with a body limit)
//	net.go           FreePort, StartOnFreePort, WaitHTTP, WaitServer
//	data.go          SampleData
//	binary.go        BuildBinary, CleanupBinaries, Main
//	foreign.go       ForeignFixture, BuildForeignCache, ForeignBusybox, ELFMachine
package testenv
