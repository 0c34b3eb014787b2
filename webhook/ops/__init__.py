"""Day-two edge: `podpatterns check | audit | restart` against a live cluster (the official `kubernetes`
client, the user's kubeconfig or the in-cluster config). Pure parts (selectors.py, conditions.py,
classify.py) hold the decisions; kube.py finds what the chart installed; the command modules talk to
the API server and print."""
