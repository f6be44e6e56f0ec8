package kube

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

func TestDesiredStatusKeepsTransitionTimesAndDropsStaleConditions(t *testing.T) {
	t0, t1 := time.Unix(1000, 0), time.Unix(2000, 0)
	cond := func(typ string, st metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: "m"}
	}
	first := DesiredStatus(securityv1.Status{}, model.ObjectStatus{Generation: 1, Conditions: []metav1.Condition{
		cond("Accepted", metav1.ConditionTrue, "Accepted"), cond("Warning", metav1.ConditionTrue, "L7"),
	}}, t0)
	second := DesiredStatus(first, model.ObjectStatus{Generation: 2, Conditions: []metav1.Condition{
		cond("Accepted", metav1.ConditionTrue, "Accepted"),
	}}, t1)
	acc := meta.FindStatusCondition(second.Conditions, "Accepted")
	if !acc.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("unchanged condition moved to %v", acc.LastTransitionTime)
	}
	if meta.FindStatusCondition(second.Conditions, "Warning") != nil || second.ObservedGeneration != 2 {
		t.Errorf("stale warning kept or generation %d: %+v", second.ObservedGeneration, second.Conditions)
	}
	third := DesiredStatus(second, model.ObjectStatus{Generation: 3, Conditions: []metav1.Condition{
		cond("Accepted", metav1.ConditionFalse, "Invalid"),
	}}, t1)
	if got := meta.FindStatusCondition(third.Conditions, "Accepted"); !got.LastTransitionTime.Time.Equal(t1) || got.Reason != "Invalid" {
		t.Errorf("changed condition: %+v", got)
	}
}
