"""Node tests: a one-node Kubernetes cluster (containerd + kubelet) that runs the webhook and injected pods."""
