"""Injected containers get no ServiceAccount token.

The API server's ServiceAccount admission plugin mounts the pod's token into every container without a mount
at the token path, and the API server runs it again after a mutating webhook changed the pod (in-tree plugin
reinvocation). Seen on a real node: every sidecar we added got the token, and that second change made the API
server call the webhook twice per pod (reinvocationPolicy IfNeeded). An empty read-only emptyDir at the token
path in each of our containers stops both: the plugin skips a container that already mounts the path.
Admin-defined template containers keep the plugin's behaviour (a template may need the API).
"""

from __future__ import annotations

from webhook.injection import annotations as keys
from webhook.injection.workspace import Workspace

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME = "podpatterns-no-token"
OURS = "podpatterns-"


def withhold_token(ws: Workspace) -> None:
    if ws.spec.get("automountServiceAccountToken") is False:
        return  # the plugin mounts nothing anywhere
    ours = [c for c in ws.added.init_steps + ws.added.sidecars if str(c.get("name", "")).startswith(OURS)]
    ours = [c for c in ours if not any(m.get("mountPath") == TOKEN_PATH for m in c.get("volumeMounts") or [])]
    if not ours or not ws.claim_volume_name(keys.INJECT, VOLUME):
        return
    for container in ours:
        container["volumeMounts"] = [
            *(container.get("volumeMounts") or []),
            {"mountPath": TOKEN_PATH, "name": VOLUME, "readOnly": True},
        ]
    ws.added.volumes.append({"name": VOLUME, "emptyDir": {"sizeLimit": "1Mi"}})
