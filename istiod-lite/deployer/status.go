package deployer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

// updateStatus writes Accepted, Programmed and the address on the Gateway. The
// address is published only once the waypoint is running: clients start using a
// waypoint when its address appears (DESIGN.md 1).
func (d *Deployer) updateStatus(ctx context.Context, gw *gwv1.Gateway) error {
	var addr string
	programmed, reason, msg := false, string(gwv1.GatewayReasonPending), "waiting for the waypoint Deployment to be available"
	svc, err := d.cfg.Services.Services(gw.Namespace).Get(gw.Name)
	dep, derr := d.deployments.Deployments(gw.Namespace).Get(gw.Name)
	switch {
	case err != nil || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == "None":
		msg = "waiting for the waypoint Service to get a cluster IP"
	case derr != nil:
	case dep.Status.AvailableReplicas > 0:
		programmed, reason, msg, addr = true, string(gwv1.GatewayReasonProgrammed), "waypoint is running", svc.Spec.ClusterIP
	}
	st := DesiredGatewayStatus(gw, programmed, reason, msg, addr, d.now())
	if equality.Semantic.DeepEqual(gw.Status, st) {
		return nil
	}
	body, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return fmt.Errorf("encode gateway status: %w", err)
	}
	if _, err := d.cfg.Gateway.GatewayV1().Gateways(gw.Namespace).Patch(ctx, gw.Name, types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: fieldManager}, "status"); err != nil {
		return fmt.Errorf("gateway %s/%s status: %w", gw.Namespace, gw.Name, err)
	}
	return nil
}

// DesiredGatewayStatus computes a waypoint Gateway's status from its current one
// (keeping transition times of unchanged conditions).
func DesiredGatewayStatus(gw *gwv1.Gateway, programmed bool, reason, msg, addr string, now time.Time) gwv1.GatewayStatus {
	st := *gw.Status.DeepCopy()
	accepted, aReason, aMsg := true, string(gwv1.GatewayReasonAccepted), "waypoint of class "+mesh.WaypointGatewayClass
	if !hasMeshListener(gw) {
		accepted, aReason = false, string(gwv1.GatewayReasonListenersNotValid)
		aMsg = fmt.Sprintf("a waypoint needs a listener {name: %s, port: %d, protocol: %s}", mesh.WaypointListenerName, mesh.PortHBONE, mesh.WaypointProtocol)
		programmed, reason, msg, addr = false, string(gwv1.GatewayReasonInvalid), aMsg, ""
	}
	setCondition(&st.Conditions, metav1.Condition{Type: string(gwv1.GatewayConditionAccepted), Status: boolStatus(accepted),
		Reason: aReason, Message: aMsg, ObservedGeneration: gw.Generation}, now)
	setCondition(&st.Conditions, metav1.Condition{Type: string(gwv1.GatewayConditionProgrammed), Status: boolStatus(programmed),
		Reason: reason, Message: msg, ObservedGeneration: gw.Generation}, now)
	st.Addresses = nil
	if addr != "" {
		t := gwv1.HostnameAddressType
		if _, err := netip.ParseAddr(addr); err == nil {
			t = gwv1.IPAddressType
		}
		st.Addresses = []gwv1.GatewayStatusAddress{{Type: &t, Value: addr}}
	}
	var listeners []gwv1.ListenerStatus
	for _, l := range gw.Spec.Listeners {
		ls := gwv1.ListenerStatus{Name: l.Name, SupportedKinds: []gwv1.RouteGroupKind{}}
		for _, old := range gw.Status.Listeners {
			if old.Name == l.Name {
				ls.Conditions = old.Conditions
				ls.AttachedRoutes = old.AttachedRoutes
			}
		}
		setCondition(&ls.Conditions, metav1.Condition{Type: string(gwv1.ListenerConditionAccepted), Status: boolStatus(accepted),
			Reason: string(gwv1.ListenerReasonAccepted), Message: "", ObservedGeneration: gw.Generation}, now)
		setCondition(&ls.Conditions, metav1.Condition{Type: string(gwv1.ListenerConditionProgrammed), Status: boolStatus(programmed),
			Reason: reason, Message: "", ObservedGeneration: gw.Generation}, now)
		listeners = append(listeners, ls)
	}
	st.Listeners = listeners
	return st
}

func hasMeshListener(gw *gwv1.Gateway) bool {
	for _, l := range gw.Spec.Listeners {
		if string(l.Protocol) == mesh.WaypointProtocol && l.Port == mesh.PortHBONE {
			return true
		}
	}
	return false
}

func boolStatus(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// setCondition sets c (transition time now if its status changed) and reports a change.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, now time.Time) bool {
	c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	return meta.SetStatusCondition(conds, c)
}
