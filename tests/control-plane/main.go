// Command kube-apiserver is the unmodified Kubernetes API server, built from the
// k8s.io/kubernetes Go module so Kastell's tests run against the real thing
// (structural schemas, CEL, server-side apply, status subresource, watches).
//
// It is the same main as cmd/kube-apiserver in the Kubernetes tree; nothing is
// patched or stubbed.
package main

import (
	"os"

	_ "time/tzdata" // as upstream: time-zone data for CronJob validation, independent of the host

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
