package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/harness"
)

// A waypoint for the namespace's services (istio.io/waypoint-for defaults to service).
const waypointGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
`

// getOnlyPolicy is an L7 policy on the echo Service, enforced by its waypoint.
const getOnlyPolicy = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-get-only}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: ALLOW
  rules:
  - to:
    - operation: {methods: ["GET"]}
`

// echoV2 is a second echo version behind its own Service, and a GAMMA HTTPRoute on
// the echo Service sending requests with "x-version: v2" to it.
const echoV2 = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-v2}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo-v2}}
  template:
    metadata: {labels: {app: echo-v2}}
    spec:
      containers:
      - name: echo
        image: ambit.local/echo:dev
        imagePullPolicy: Never
        env:
        - {name: VERSION, value: v2}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2}
spec:
  selector: {app: echo-v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
`

const versionRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-by-version}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: echo-v2, port: 80}]
  - backendRefs: [{name: echo, port: 80}]
`

// httpFrom sends one request from pod client and returns the body and the error of
// kubectl exec (the client exits non-zero on a failure or an HTTP status >= 400).
func httpFrom(ns, client, method, url string, flags ...string) (string, error) {
	args := append([]string{"-n", ns, "exec", client, "--", "client", "http", "-X", method, "-timeout", "3s"}, flags...)
	return cl.Kubectl(context.Background(), "", append(args, url)...)
}

// TestWaypointEnforcesL7PolicyAndCannotBeBypassed: with the namespace bound to a
// waypoint, an L7 AuthorizationPolicy on the echo Service admits GET and answers POST
// with Istio's 403, a client that talks to the echo pod's IP directly, skipping the
// waypoint, is refused (DESIGN.md section 1), and a GAMMA HTTPRoute with a header
// match routes through the waypoint.
func TestWaypointEnforcesL7PolicyAndCannotBeBypassed(t *testing.T) {
	ns := cl.NewNamespace(t)
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/dataplane-mode=ambient")
	app := deployEchoAndClient(t, ns, "")
	waitRedirection(ns, "enabled", "client", app.echoPod)
	podIP := strings.TrimSpace(ns.Kubectl("get", "pod", app.echoPod, "-o", "jsonpath={.status.podIP}"))
	svcURL := "http://echo." + ns.Name + ".svc.cluster.local/hello"
	direct := "http://" + podIP + ":8080/hello"

	// Before any waypoint the pod IP is reachable over the mesh: what follows refuses
	// the bypass, not the path.
	ns.Eventually(time.Minute, "direct GET before the waypoint", func() error {
		_, err := httpFrom(ns.Name, "client", "GET", direct)
		return err
	})

	// 1. Deploy the waypoint and bind the namespace to it.
	ns.Apply(waypointGateway)
	ns.Eventually(2*time.Minute, "waypoint Deployment", func() error {
		_, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "rollout", "status", "deployment/waypoint", "--timeout=10s")
		return err
	})
	ns.Eventually(time.Minute, "Gateway Programmed", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "gateway", "waypoint", "-o",
			`jsonpath={.status.conditions[?(@.type=="Programmed")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("Programmed = %q (%w)", out, err)
		}
		return nil
	})
	ns.Apply(getOnlyPolicy)
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/use-waypoint=waypoint")

	// 2. Through the waypoint: POST is denied by the L7 policy (which only a waypoint
	// can enforce, so a 403 proves the path), GET is allowed.
	ns.Eventually(time.Minute, "POST denied through the waypoint", func() error {
		out, err := httpFrom(ns.Name, "client", "POST", svcURL)
		if err == nil {
			return fmt.Errorf("POST allowed: %s", out)
		}
		if !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "RBAC: access denied") {
			return fmt.Errorf("POST failed, but not with 403 RBAC: access denied: %w", err)
		}
		return nil
	})
	ns.Eventually(30*time.Second, "GET allowed through the waypoint", func() error {
		out, err := httpFrom(ns.Name, "client", "GET", svcURL)
		if err != nil {
			return err
		}
		if !strings.Contains(out, `"method":"GET"`) {
			return fmt.Errorf("unexpected answer %q", out)
		}
		return nil
	})

	// 3. Bypass: the echo pod's IP, addressed directly, is refused, for GET too.
	ns.Eventually(time.Minute, "direct connection to the pod IP refused", func() error {
		if out, err := httpFrom(ns.Name, "client", "GET", direct); err == nil {
			return fmt.Errorf("direct GET to %s bypassed the waypoint: %s", podIP, out)
		}
		if out, err := httpFrom(ns.Name, "client", "POST", direct); err == nil {
			return fmt.Errorf("direct POST to %s bypassed the waypoint: %s", podIP, out)
		}
		return nil
	})
	if err := tcpEcho(ns.Name, "client", podIP+":9000", "bypass"); err == nil {
		t.Errorf("TCP to %s:9000 bypassed the waypoint", podIP)
	}
	// And the service path still works after the refusals.
	if out, err := httpFrom(ns.Name, "client", "GET", svcURL); err != nil {
		t.Fatalf("GET through the waypoint after the bypass attempts: %v (%s)", err, out)
	}

	// 4. Routing from xDS: a GAMMA HTTPRoute on echo sends "x-version: v2" to echo-v2,
	// everything else to echo; the policy still applies.
	ns.Apply(echoV2)
	ns.Kubectl("rollout", "status", "deployment/echo-v2", "--timeout=2m")
	ns.Apply(versionRoute)
	ns.Eventually(time.Minute, "x-version: v2 routed to echo-v2", func() error {
		out, err := httpFrom(ns.Name, "client", "GET", svcURL, "-H", "x-version: v2")
		if err != nil {
			return err
		}
		if !strings.Contains(out, `"pod":"echo-v2-`) {
			return fmt.Errorf("answered by %q", out)
		}
		return nil
	})
	for range 5 {
		out, err := httpFrom(ns.Name, "client", "GET", svcURL)
		if err != nil {
			t.Fatalf("GET without the header: %v", err)
		}
		if !strings.Contains(out, `"pod":"`+app.echoPod+`"`) {
			t.Fatalf("GET without the header answered by %q, want %s", out, app.echoPod)
		}
	}
	if _, err := httpFrom(ns.Name, "client", "POST", svcURL, "-H", "x-version: v2"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("POST with x-version: v2: %v, want 403", err)
	}
}

// TestWaypointPerServiceAccount: a waypoint for workload traffic bound through the
// ServiceAccount label (what `kubectl ambit waypoint apply --for-service-account`
// does) takes the traffic addressed to the pods of that ServiceAccount, by pod IP or
// through their Service, and enforces the policies attached to it.
func TestWaypointPerServiceAccount(t *testing.T) {
	ns := cl.NewNamespace(t)
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/dataplane-mode=ambient")
	deployEchoAndClient(t, ns, "")
	ns.Kubectl("create", "serviceaccount", "echo")
	ns.Kubectl("set", "serviceaccount", "deployment/echo", "echo")
	ns.Kubectl("rollout", "status", "deployment/echo", "--timeout=2m")
	// The replaced pod (ServiceAccount default) may still be terminating.
	echoPod := strings.TrimSpace(ns.Kubectl("get", "pods", "-l", "app=echo",
		"-o", `jsonpath={.items[?(@.spec.serviceAccountName=="echo")].metadata.name}`))
	waitRedirection(ns, "enabled", "client", echoPod)
	podIP := strings.TrimSpace(ns.Kubectl("get", "pod", echoPod, "-o", "jsonpath={.status.podIP}"))

	ns.Apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: echo-waypoint, labels: {istio.io/waypoint-for: workload}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: echo-waypoint}]
  action: ALLOW
  rules:
  - to:
    - operation: {methods: ["GET"]}
`)
	ns.Eventually(2*time.Minute, "waypoint Programmed", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "gateway", "echo-waypoint", "-o",
			`jsonpath={.status.conditions[?(@.type=="Programmed")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("Programmed = %q (%w)", out, err)
		}
		return nil
	})
	ns.Kubectl("label", "serviceaccount", "echo", "istio.io/use-waypoint=echo-waypoint")

	for what, url := range map[string]string{
		"pod IP":  "http://" + podIP + ":8080/hello",
		"Service": "http://echo." + ns.Name + ".svc.cluster.local/hello",
	} {
		ns.Eventually(time.Minute, "POST to the "+what+" denied by the waypoint", func() error {
			out, err := httpFrom(ns.Name, "client", "POST", url)
			if err == nil {
				return fmt.Errorf("POST allowed: %s", out)
			}
			if !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "RBAC: access denied") {
				return fmt.Errorf("POST failed, but not with 403 RBAC: access denied: %w", err)
			}
			return nil
		})
		if out, err := httpFrom(ns.Name, "client", "GET", url); err != nil {
			t.Errorf("GET to the %s through the waypoint: %v (%s)", what, err, out)
		}
	}
}

// waypointForNamespace makes ns ambient with echo and client, deploys the namespace's
// waypoint and binds the namespace to it once it is Programmed.
func waypointForNamespace(t *testing.T, ns *harness.Namespace) echoApp {
	t.Helper()
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/dataplane-mode=ambient")
	app := deployEchoAndClient(t, ns, "")
	waitRedirection(ns, "enabled", "client", app.echoPod)
	ns.Apply(waypointGateway)
	ns.Eventually(2*time.Minute, "Gateway Programmed", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "gateway", "waypoint", "-o",
			`jsonpath={.status.conditions[?(@.type=="Programmed")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("Programmed = %q (%w)", out, err)
		}
		return nil
	})
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/use-waypoint=waypoint")
	return app
}

// eventuallyAnsweredBy waits until a GET of url from pod client (with flags) is
// answered by a pod whose name starts with pod.
func eventuallyAnsweredBy(ns *harness.Namespace, pod, url string, flags ...string) {
	ns.Eventually(time.Minute, "GET "+url+" answered by "+pod+"*", func() error {
		out, err := httpFrom(ns.Name, "client", "GET", url, flags...)
		if err != nil {
			return err
		}
		if !strings.Contains(out, `"pod":"`+pod) {
			return fmt.Errorf("answered by %q", out)
		}
		return nil
	})
}

// routeConditions returns "Accepted/ResolvedRefs" status and reasons of a route's
// first parent, as "True:Accepted/False:RefNotPermitted".
func routeConditions(ns *harness.Namespace, kind, name string) (string, error) {
	return cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", kind, name, "-o",
		`jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}:{.status.parents[0].conditions[?(@.type=="Accepted")].reason}`+
			`/{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}:{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].reason}`)
}

// TestWaypointRouteToOtherNamespaceNeedsReferenceGrant: a GAMMA HTTPRoute sending
// "x-backend: b" to a Service in another namespace gets ResolvedRefs=False
// (RefNotPermitted) and those requests 500 until a ReferenceGrant in that namespace
// allows it; then they reach the other namespace's pod, and after the grant is
// deleted they get 500 again. Other requests follow the route's default rule
// throughout.
func TestWaypointRouteToOtherNamespaceNeedsReferenceGrant(t *testing.T) {
	ns := cl.NewNamespace(t)
	other := cl.NewNamespace(t)
	other.Kubectl("label", "namespace", other.Name, "istio.io/dataplane-mode=ambient")
	other.Apply(echoV2)
	other.Kubectl("rollout", "status", "deployment/echo-v2", "--timeout=2m")
	app := waypointForNamespace(t, ns)
	svcURL := "http://echo." + ns.Name + ".svc.cluster.local/hello"

	ns.Apply(fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-other}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{headers: [{name: x-backend, value: other}]}]
    backendRefs: [{name: echo-v2, namespace: %s, port: 80}]
  - backendRefs: [{name: echo, port: 80}]
`, other.Name))
	ns.Eventually(time.Minute, "route status without a grant", func() error {
		out, err := routeConditions(ns, "httproute", "to-other")
		if want := "True:Accepted/False:RefNotPermitted"; err != nil || out != want {
			return fmt.Errorf("status %q (%w), want %q", out, err, want)
		}
		return nil
	})
	notPermitted := func() error {
		out, err := httpFrom(ns.Name, "client", "GET", svcURL, "-H", "x-backend: other")
		if err == nil || !strings.Contains(err.Error(), "500") {
			return fmt.Errorf("GET with x-backend: other answered %q (%w), want 500", out, err)
		}
		return nil
	}
	ns.Eventually(time.Minute, "not permitted backend answers 500", notPermitted)
	if out, err := httpFrom(ns.Name, "client", "GET", svcURL); err != nil || !strings.Contains(out, `"pod":"`+app.echoPod+`"`) {
		t.Fatalf("GET without the header: %q (%v), want an answer from %s", out, err, app.echoPod)
	}

	other.Apply(fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-routes}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: %s}]
  to: [{group: "", kind: Service, name: echo-v2}]
`, ns.Name))
	ns.Eventually(time.Minute, "route status with the grant", func() error {
		out, err := routeConditions(ns, "httproute", "to-other")
		if want := "True:Accepted/True:ResolvedRefs"; err != nil || out != want {
			return fmt.Errorf("status %q (%w), want %q", out, err, want)
		}
		return nil
	})
	eventuallyAnsweredBy(ns, "echo-v2-", svcURL, "-H", "x-backend: other")

	other.Kubectl("delete", "referencegrant", "from-routes")
	ns.Eventually(time.Minute, "backend not permitted again after the grant is deleted", notPermitted)
}

// TestWaypointRouteSectionNameSelectsServicePort: a GAMMA HTTPRoute whose parentRef
// names one port of a Service (sectionName) applies to that port only; a parentRef
// naming a port the Service does not have, or a listener the waypoint does not have,
// is not accepted (NoMatchingParent), and a route to the waypoint's mesh listener is
// (it sends everything without a GAMMA route to echo, which is also what the other
// port of the two-port Service selects).
func TestWaypointRouteSectionNameSelectsServicePort(t *testing.T) {
	ns := cl.NewNamespace(t)
	app := waypointForNamespace(t, ns)
	ns.Apply(echoV2 + `
---
apiVersion: v1
kind: Service
metadata: {name: echo-two-ports}
spec:
  selector: {app: echo}
  ports:
  - {name: first, port: 80, targetPort: 8080}
  - {name: second, port: 8081, targetPort: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: first-port-to-v2}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-two-ports, sectionName: first}]
  rules: [{backendRefs: [{name: echo-v2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-such-port}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-two-ports, sectionName: third}]
  rules: [{backendRefs: [{name: echo-v2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-listener}
spec:
  parentRefs: [{name: waypoint, sectionName: mesh}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-such-listener}
spec:
  parentRefs: [{name: waypoint, sectionName: http}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
`)
	ns.Kubectl("rollout", "status", "deployment/echo-v2", "--timeout=2m")
	for name, want := range map[string]string{
		"first-port-to-v2": "True:Accepted/True:ResolvedRefs",
		"no-such-port":     "False:NoMatchingParent/True:ResolvedRefs",
		"mesh-listener":    "True:Accepted/True:ResolvedRefs",
		"no-such-listener": "False:NoMatchingParent/True:ResolvedRefs",
	} {
		ns.Eventually(time.Minute, name+" status", func() error {
			out, err := routeConditions(ns, "httproute", name)
			if err != nil || out != want {
				return fmt.Errorf("status %q (%w), want %q", out, err, want)
			}
			return nil
		})
	}
	host := "http://echo-two-ports." + ns.Name + ".svc.cluster.local"
	eventuallyAnsweredBy(ns, "echo-v2-", host+":80/hello")
	for range 5 {
		out, err := httpFrom(ns.Name, "client", "GET", host+":8081/hello")
		if err != nil || !strings.Contains(out, `"pod":"`+app.echoPod+`"`) {
			t.Fatalf("port second: %q (%v), want the Service's own pod %s (the route is for port first)", out, err, app.echoPod)
		}
	}
}
