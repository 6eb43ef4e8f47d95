//go:build tools

// Package tools pins crictl, so go.sum covers it.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
