# The Python `kubernetes` client (37.x) against klab's API server: list, create, watch from a
# resourceVersion, patch, scale, a 404, delete. Run by tests/apiserver.rs with a kubeconfig path.
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
ns = "py"
v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
names = [n.metadata.name for n in v1.list_namespace().items]
assert ns in names, names
pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p", labels={"app": "py"}),
                   spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]))
created = v1.create_namespaced_pod(ns, pod)
rv = created.metadata.resource_version
v1.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"tier": "x"}}})
w = watch.Watch()
seen = []
for ev in w.stream(v1.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=2):
    seen.append((ev["type"], ev["object"].metadata.labels.get("tier")))
    w.stop()
assert seen == [("MODIFIED", "x")], seen
pods = v1.list_namespaced_pod(ns, label_selector="app=py")
assert [p.metadata.name for p in pods.items] == ["p"]
dep = client.V1Deployment(metadata=client.V1ObjectMeta(name="d"),
    spec=client.V1DeploymentSpec(replicas=2, selector=client.V1LabelSelector(match_labels={"a": "b"}),
        template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"a": "b"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.25")]))))
apps.create_namespaced_deployment(ns, dep)
apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 4}})
assert apps.read_namespaced_deployment("d", ns).spec.replicas == 4
try:
    v1.read_namespaced_pod("nope", ns)
    raise SystemExit("expected 404")
except client.exceptions.ApiException as e:
    assert e.status == 404, e
v1.delete_namespaced_pod("p", ns)
v1.delete_namespace(ns)
print("python client ok")
