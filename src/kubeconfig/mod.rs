//! Kubeconfig loading and resolution, as client-go clientcmd does it.
