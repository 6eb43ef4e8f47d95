# Sourced by tests/cluster/build.sh and tests/node/build_node.sh: the Go
# environment and the version ldflags every binary built from the pinned
# k8s.io/kubernetes module gets, so the control plane and the node's kubelet
# and kube-proxy report the same version. Needs KUBE_VERSION (versions.env).

# The module proxy is reachable but the checksum database may not be: go.sum
# files are committed, so every download is still verified against them.
export GOSUMDB="${GOSUMDB:-off}" GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0
# Builds are memory-hungry; two parallel compile jobs fit a 2-core machine.
export GOMAXPROCS="${GOMAXPROCS:-$(nproc)}"

kube_pkg="k8s.io/component-base/version"
minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
kube_ldflags="-s -w -X ${kube_pkg}.gitVersion=${KUBE_VERSION} -X ${kube_pkg}.gitMajor=1 -X ${kube_pkg}.gitMinor=${minor} -X ${kube_pkg}.gitTreeState=clean -X ${kube_pkg}.buildDate=1970-01-01T00:00:00Z"
# client-go and kubectl keep their own copy of the version variables.
kube_ldflags="$kube_ldflags -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION}"
