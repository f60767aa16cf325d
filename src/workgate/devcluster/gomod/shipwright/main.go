// Command shipwright-build-controller runs Shipwright Build's controllers, unchanged from the
// pinned release, for workgate's embedded control plane.
//
// Upstream's main serves metrics on a fixed 0.0.0.0:8383 and always elects a leader. Several
// embedded planes share one machine (a developer's `workgate dev up` next to a test session),
// so this one takes the metrics address as a flag, runs a single unelected instance, and can
// be limited to some namespaces (the test session keeps Shipwright out of the namespaces
// where tests play the controller themselves).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"

	buildconfig "github.com/shipwright-io/build/pkg/config"
	"github.com/shipwright-io/build/pkg/controller"
	"github.com/shipwright-io/build/pkg/ctxlog"
	buildmetrics "github.com/shipwright-io/build/pkg/metrics"
	"github.com/shipwright-io/build/version"
)

const module = "github.com/shipwright-io/build"

func main() {
	metricsAddress := flag.String("metrics-bind-address", "127.0.0.1:8383", "address of the metrics endpoint")
	namespaces := flag.String("namespaces", "", "comma-separated namespaces to watch (default: all)")
	pflag.CommandLine.AddGoFlagSet(ctxlog.CustomZapFlagSet())
	pflag.CommandLine.AddGoFlagSet(flag.CommandLine)
	pflag.Parse()

	ctx := ctxlog.NewParentContext(ctxlog.NewLogger("build"))
	version.SetVersion(moduleVersion())
	ctxlog.Info(ctx, fmt.Sprintf("Shipwright Build Controller Version: %s", version.Version))

	fail := func(err error) {
		ctxlog.Error(ctx, err, "")
		os.Exit(1)
	}
	restConfig, err := config.GetConfig()
	if err != nil {
		fail(err)
	}
	buildConfig := buildconfig.NewDefaultConfig()
	if err := buildConfig.SetConfigFromEnv(); err != nil {
		fail(err)
	}

	options := manager.Options{Metrics: server.Options{BindAddress: *metricsAddress}}
	if *namespaces != "" {
		watched := map[string]cache.Config{}
		for _, namespace := range strings.Split(*namespaces, ",") {
			watched[strings.TrimSpace(namespace)] = cache.Config{}
		}
		// controller.NewManager sets its own cache options; the namespaces go in here.
		options.NewCache = func(c *rest.Config, o cache.Options) (cache.Cache, error) {
			o.DefaultNamespaces = watched
			return cache.New(c, o)
		}
	}
	mgr, err := controller.NewManager(ctx, buildConfig, restConfig, options)
	if err != nil {
		fail(err)
	}
	buildmetrics.InitPrometheus(buildConfig)
	for path, handler := range buildmetrics.ExtraHandlers() {
		if err := mgr.AddMetricsServerExtraHandler(path, handler); err != nil {
			fail(err)
		}
	}
	ctxlog.Info(ctx, "Starting the Cmd.")
	if err := mgr.Start(signals.SetupSignalHandler()); err != nil {
		fail(err)
	}
}

// moduleVersion is the Shipwright release this binary was built from (go.mod pins it).
func moduleVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == module {
				return dep.Version
			}
		}
	}
	return "devel"
}
