#!/usr/bin/env bash
# Installs or upgrades birdsong from an overlay: the schema migration first,
# then the roles.
#
#   deploy/apply.sh deploy/overlays/minio
#
# 1. renders the overlay (kubectl kustomize);
# 2. deletes the previous migration Job (a Job's pod template cannot change,
#    and the new image must run the migration);
# 3. applies the settings, the Secret and the migration Job alone, and waits
#    for the Job to complete (on failure: prints its log and stops, leaving
#    the running roles as they were);
# 4. applies everything else and waits for each role to roll out.
#
# Needs KEDA installed in the cluster (its CRDs) and the overlay's
# secrets.env written. DEPLOY_TIMEOUT (default 15m) bounds each wait.
set -euo pipefail
overlay=${1:?usage: deploy/apply.sh OVERLAY_DIR}
timeout=${DEPLOY_TIMEOUT:-15m}
[ -f "$overlay/kustomization.yaml" ] || { echo "$overlay has no kustomization.yaml" >&2; exit 1; }
[ -f "$overlay/secrets.env" ] || {
  echo "$overlay/secrets.env is missing: copy $overlay/secrets.env.example and fill it in" >&2
  exit 1
}
if grep -q CHANGE-ME "$overlay/secrets.env"; then
  echo "$overlay/secrets.env still has CHANGE-ME placeholders: fill them in" >&2
  exit 1
fi
ns=$(sed -n 's/^namespace: *//p' "$overlay/kustomization.yaml")
ns=${ns:-default}
kubectl get crd scaledobjects.keda.sh triggerauthentications.keda.sh >/dev/null \
  || { echo "KEDA's CRDs are not installed in this cluster: install KEDA first" >&2; exit 1; }
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
kubectl kustomize "$overlay" >"$rendered"

echo "== migration"
kubectl -n "$ns" delete job birdsong-migrate --ignore-not-found --wait=true
kubectl apply -f "$rendered" -l app.kubernetes.io/component=config
kubectl apply -f "$rendered" -l app.kubernetes.io/component=migrate
deadline=$(( $(date +%s) + $(sed 's/m$/*60/; s/s$//; s/h$/*3600/' <<<"$timeout") ))
while :; do
  state=$(kubectl -n "$ns" get job birdsong-migrate \
    -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
  case " $state " in
    *" Complete "*) echo "migration complete"; break ;;
    *" Failed "*)
      kubectl -n "$ns" logs job/birdsong-migrate --tail=50 >&2 || true
      echo "the migration failed; the roles were not changed" >&2
      exit 1 ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "the migration did not finish within $timeout" >&2
    exit 1
  fi
  sleep 3
done

echo "== roles"
kubectl apply -f "$rendered" -l 'app.kubernetes.io/component!=migrate'
for role in api worker retrainer; do
  kubectl -n "$ns" rollout status "deployment/birdsong-$role" --timeout="$timeout"
done
