package agent

import (
	"fmt"
	"os"

	"github.com/ambit-mesh/ambit/cni/netns"
)

// migrateReqSysctl is net.ipv4.tcp_migrate_req (Linux 5.14+; it covers TCP over IPv6
// too), set per network namespace.
const migrateReqSysctl = "/proc/sys/net/ipv4/tcp_migrate_req"

// migrateListeners sets net.ipv4.tcp_migrate_req in the pod's network namespace. A
// ztunnel restart hands a pod's listeners over inside the pod: the new ztunnel binds
// beside the old one (SO_REUSEPORT), then the old one closes its listeners. Without
// the setting, the connections the kernel had already given the old listener (the
// handshake done or under way, not yet accepted) are reset when it closes; with it
// they move to the new listener. It changes nothing for an application whose
// listeners do not share a port through SO_REUSEPORT.
func migrateListeners(f *os.File) error {
	err := netns.Do(f, func() error {
		// /proc/sys/net is the network namespace of the thread that opens it.
		return os.WriteFile(migrateReqSysctl, []byte("1"), 0)
	})
	if err != nil {
		return fmt.Errorf("set net.ipv4.tcp_migrate_req: %w", err)
	}
	return nil
}
