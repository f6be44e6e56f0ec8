package netns

import "testing"

func TestPodUIDFromCgroup(t *testing.T) {
	const uid = "0b6f2a3e-1c2d-4e5f-8a9b-0123456789ab"
	tests := []struct {
		name, cgroup, want string
	}{
		{"cgroupfs v1", "12:cpu:/ambit-n1/kubepods/besteffort/pod" + uid + "/0123abcd\n3:memory:/x\n", uid},
		{"cgroupfs guaranteed", "0::/kubepods/pod" + uid + "/ab12\n", uid},
		{"systemd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
			"0b6f2a3e_1c2d_4e5f_8a9b_0123456789ab.slice/cri-containerd-ab.scope\n", uid},
		{"host process", "0::/system.slice/containerd.service\n", ""},
		{"not a uid", "0::/kubepods/podnotauid/ab\n", ""},
		{"pod in a word", "0::/kubepods/ipod" + uid + "/ab\n", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PodUIDFromCgroup(tt.cgroup); got != tt.want {
				t.Errorf("PodUIDFromCgroup() = %q, want %q", got, tt.want)
			}
		})
	}
}
