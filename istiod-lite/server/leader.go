package server

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// runAsLeader runs work while this replica holds the istiod-lite lease, and competes
// again after losing it, until ctx ends.
func runAsLeader(ctx context.Context, k kubernetes.Interface, cfg Config, work func(context.Context) error) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.Namespace, "istiod-lite", k.CoreV1(), k.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: cfg.PodName})
	if err != nil {
		return fmt.Errorf("leader lock: %w", err)
	}
	for ctx.Err() == nil {
		var workErr error
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			ReleaseOnCancel: true,
			Name:            "istiod-lite",
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					cfg.Log.Info("leader: writing status and deploying waypoints", "pod", cfg.PodName)
					workErr = work(lctx)
				},
				OnStoppedLeading: func() { cfg.Log.Info("leader: lost the lease", "pod", cfg.PodName) },
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		le.Run(ctx)
		if workErr != nil {
			return workErr
		}
	}
	return nil
}
