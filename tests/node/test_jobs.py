"""A Job with a log tailer: native sidecars let it complete promptly; classic sidecars keep it running."""

from __future__ import annotations

import datetime as dt
import time

from tests.node import images
from tests.node.cluster import Cluster
from tests.node.workloads import POD_SECURITY, RESTRICTED, container_statuses, logs, wait_pod

WORK = 'mkdir -p /var/log/app; for i in 1 2 3; do echo "report line $i" >> /var/log/app/report.log; sleep 1; done'


def report_job(namespace: str, name: str, native: bool) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": {"job": name},
                    "annotations": {
                        "podpatterns.io/log-tail": "/var/log/app/report.log",
                        "podpatterns.io/native-sidecars": "true" if native else "false",
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": POD_SECURITY,
                    "containers": [
                        {
                            "name": "report",
                            "image": images.BUSYBOX,
                            "command": ["sh", "-c", WORK],
                            "securityContext": RESTRICTED,
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "100m", "memory": "32Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def _finished_at(status: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(status["state"]["terminated"]["finishedAt"].replace("Z", "+00:00"))


def test_job_with_native_tailer_completes_promptly(cluster: Cluster, namespace: str) -> None:
    cluster.apply(report_job(namespace, "report", native=True))
    pod = wait_pod(cluster, namespace, "job=report", condition="Succeeded", timeout=90)
    statuses = container_statuses(pod)
    tailer = statuses["podpatterns-log-report-log"]
    # The tailer started before the app and stopped when asked, within seconds, not the 30 s grace period.
    assert _finished_at(tailer) - _finished_at(statuses["report"]) < dt.timedelta(seconds=5), statuses
    text = logs(cluster, namespace, pod["metadata"]["name"], "podpatterns-log-report-log")
    assert [line for line in text.splitlines() if line.startswith("report line")] == [
        "report line 1",
        "report line 2",
        "report line 3",
    ]
    # The Job controller records the pod's success a moment later.
    cluster.wait_for(
        "Job report to succeed",
        lambda: cluster.get("job", "report", "-n", namespace)["status"].get("succeeded") == 1,
        30,
    )


def test_job_with_classic_tailer_keeps_running_as_documented(cluster: Cluster, namespace: str) -> None:
    """README: with native-sidecars "false" the tailer is an ordinary container, so the pod (and the Job)
    runs until it is deleted; that is why native sidecars are the default."""
    cluster.apply(report_job(namespace, "classic", native=False))

    def app_done() -> dict | None:
        for pod in cluster.get("pods", "-n", namespace, "-l", "job=classic")["items"]:
            status = container_statuses(pod).get("report") if pod["status"].get("containerStatuses") else None
            if status and "terminated" in (status.get("state") or {}):
                return pod
        return None

    pod = cluster.wait_for("the classic Job's app to finish", app_done, 90)
    time.sleep(5)
    pod = cluster.get("pod", pod["metadata"]["name"], "-n", namespace)  # type: ignore[index]
    statuses = container_statuses(pod)
    assert statuses["report"]["state"]["terminated"]["exitCode"] == 0
    assert "running" in statuses["podpatterns-log-report-log"]["state"]
    assert pod["status"]["phase"] == "Running"
    assert not cluster.get("job", "classic", "-n", namespace)["status"].get("succeeded")
