package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// The cloud config as the chart mounts it (deploy/chart/ironlb,
// ccm-deployment.yaml): the ConfigMap ironlb-ccm-config, key
// cloud-config.yaml, at /etc/ironlb.
const (
	cloudConfigMap        = "ironlb-ccm-config"
	cloudConfigKey        = "cloud-config.yaml"
	cloudConfigDir        = "/etc/ironlb"
	cloudConfigFlag       = "--cloud-config=" + cloudConfigDir + "/" + cloudConfigKey
	cloudConfigVolume     = "cloud-config"
	cloudConfigAnnotation = "checksum/cloud-config"
)

// SetCloudConfig makes IronLB's CCM run with the cloud config yaml (its
// --cloud-config), as the chart does when given one: deploy/ installs the
// CCM without. It writes the ConfigMap ironlb-ccm-config, makes the
// ironlb-ccm Deployment mount it and pass --cloud-config, with the
// content's checksum in the pod template so that a changed config rolls
// the CCM, and waits until the rollout is complete (a CCM that rejects
// the config never becomes available: the error says so).
func (c *Cluster) SetCloudConfig(ctx context.Context, yaml string) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: cloudConfigMap, Namespace: ironlbNamespace},
		Data:       map[string]string{cloudConfigKey: yaml},
	}
	if _, err := cs.CoreV1().ConfigMaps(ironlbNamespace).Update(ctx, cm, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = cs.CoreV1().ConfigMaps(ironlbNamespace).Create(ctx, cm, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating the cloud config: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("updating the cloud config: %w", err)
	}
	sum := sha256.Sum256([]byte(yaml))
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := cs.AppsV1().Deployments(ironlbNamespace).Get(ctx, "ironlb-ccm", metav1.GetOptions{})
		if err != nil {
			return err
		}
		mountCloudConfig(d, hex.EncodeToString(sum[:]))
		_, err = cs.AppsV1().Deployments(ironlbNamespace).Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("giving ironlb-ccm its cloud config: %w", err)
	}
	if err := waitRollout(ctx, cs, ironlbNamespace, "ironlb-ccm", 3*time.Minute); err != nil {
		return fmt.Errorf("ironlb-ccm with the cloud config: %w", err)
	}
	return nil
}

// mountCloudConfig edits the CCM Deployment d to mount the cloud config
// and pass --cloud-config; checksum goes into the pod template. Calling it
// again changes only the checksum.
func mountCloudConfig(d *appsv1.Deployment, checksum string) {
	spec := &d.Spec.Template.Spec
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	d.Spec.Template.Annotations[cloudConfigAnnotation] = checksum
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == cloudConfigVolume }) {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         cloudConfigVolume,
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: cloudConfigMap}}},
		})
	}
	for i := range spec.Containers {
		ctr := &spec.Containers[i]
		if ctr.Name != "ccm" {
			continue
		}
		if !slices.Contains(ctr.Args, cloudConfigFlag) {
			ctr.Args = append(ctr.Args, cloudConfigFlag)
		}
		if !slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == cloudConfigVolume }) {
			ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: cloudConfigVolume, MountPath: cloudConfigDir, ReadOnly: true})
		}
	}
}

// waitRollout waits until the Deployment's latest generation is rolled
// out: observed, every replica updated and available, no old pod left.
func waitRollout(ctx context.Context, cs kubernetes.Interface, namespace, name string, timeout time.Duration) error {
	return poll(ctx, timeout, func() error {
		d, err := cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ObservedGeneration < d.Generation {
			return fmt.Errorf("deployment %s: generation %d not observed yet", name, d.Generation)
		}
		if !deploymentAvailable(d) || d.Status.Replicas != *d.Spec.Replicas {
			return fmt.Errorf("deployment %s: %d replicas, %d updated, %d available, want %d", name, d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.AvailableReplicas, *d.Spec.Replicas)
		}
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
		if err != nil {
			return err
		}
		if len(pods.Items) != int(*d.Spec.Replicas) {
			return fmt.Errorf("deployment %s: %d pods, want %d (old ones still terminating)", name, len(pods.Items), *d.Spec.Replicas)
		}
		return nil
	})
}
