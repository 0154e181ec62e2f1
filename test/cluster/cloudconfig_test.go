package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/test/binaries"
)

// TestMountCloudConfig gives deploy/'s CCM Deployment the cloud config
// once and again: the flag, mount and volume as the chart has them, each
// once, and the checksum of the latest config.
func TestMountCloudConfig(t *testing.T) {
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "ccm", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, sum := range []string{"first", "second"} {
		t.Run(sum, func(t *testing.T) {
			mountCloudConfig(&d, sum)
			spec := d.Spec.Template.Spec
			if got := d.Spec.Template.Annotations[cloudConfigAnnotation]; got != sum {
				t.Errorf("checksum %q, want %q", got, sum)
			}
			ctr := spec.Containers[slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "ccm" })]
			flags := 0
			for _, a := range ctr.Args {
				if a == "--cloud-config=/etc/ironlb/cloud-config.yaml" {
					flags++
				}
			}
			if flags != 1 {
				t.Errorf("--cloud-config %d times in %v, want once", flags, ctr.Args)
			}
			wantMounts := []corev1.VolumeMount{{Name: "cloud-config", MountPath: "/etc/ironlb", ReadOnly: true}}
			if diff := cmp.Diff(wantMounts, ctr.VolumeMounts); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
			wantVolumes := []corev1.Volume{{Name: "cloud-config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "ironlb-ccm-config"}}}}}
			if diff := cmp.Diff(wantVolumes, spec.Volumes); diff != "" {
				t.Errorf("volumes (-want +got):\n%s", diff)
			}
		})
	}
}
