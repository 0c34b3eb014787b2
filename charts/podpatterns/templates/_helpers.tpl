{{/*
Chart name. Truncated at 63 characters because Kubernetes name fields and label values are
limited to 63 (DNS-1123 label); the trailing "-" that truncation can leave is not allowed either.
*/}}
{{- define "podpatterns.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name already
contains it (so `helm install podpatterns ...` gives "podpatterns", not "podpatterns-podpatterns").
Truncated at 63 characters for the same reason as "podpatterns.name": it is also the Service name,
which must be a DNS-1035 label.
*/}}
{{- define "podpatterns.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A name derived from fullname with a suffix, e.g. (tuple . "ca") -> "<fullname>-ca". The base is cut
first so the suffix always survives and the result still fits in 63 characters.
*/}}
{{- define "podpatterns.suffixedName" -}}
{{- if ne (len .) 2 }}
{{- fail (printf "ERROR: template \"podpatterns.suffixedName\" expects (tuple $ \"suffix\"), got %d arguments" (len .)) }}
{{- end }}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "podpatterns.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "podpatterns.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. Selector labels are a subset that never changes across upgrades
(a Deployment's selector is immutable).
*/}}
{{- define "podpatterns.labels" -}}
helm.sh/chart: {{ include "podpatterns.chart" . }}
{{ include "podpatterns.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "podpatterns.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podpatterns.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "podpatterns.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "podpatterns.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "ERROR: serviceAccount.name must be set when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "podpatterns.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The Service's DNS names; the serving certificate must cover every form a client may dial
(the API server uses <svc>.<ns>.svc).
*/}}
{{- define "podpatterns.dnsNames" -}}
{{- $svc := include "podpatterns.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{/* The kubernetes.io/tls Secret the webhook serves from, whoever produces it. */}}
{{- define "podpatterns.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existing" }}
{{- required "ERROR: certificates.existing.secretName must name a kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace when certificates.mode is existing" .Values.certificates.existing.secretName }}
{{- else }}
{{- include "podpatterns.suffixedName" (list . "tls") }}
{{- end }}
{{- end }}

{{- define "podpatterns.caSecretName" -}}
{{- include "podpatterns.suffixedName" (list . "ca") }}
{{- end }}

{{/*
certificates.mode=helm: the CA and serving pair, as a dict {caCert, caKey, cert, key} (PEM).
The CA is read back from its Secret with `lookup` so it stays the same across upgrades (the caBundle
in the webhook configuration never changes under running API servers); only the leaf is re-issued,
on every install/upgrade, and the server reloads it from the mounted Secret without a restart.
Two templates need the same values (the Secrets and the webhook's caBundle), but each template
renders on its own, so the first call caches the result in the release-scoped .Values map.
*/}}
{{- define "podpatterns.helmCerts" -}}
{{- if not (hasKey .Values "__podpatternsGeneratedCerts") }}
{{- $caName := include "podpatterns.caSecretName" . }}
{{- $ca := dict }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $caName }}
{{- if and $existing (hasKey (default dict $existing.data) "tls.crt") (hasKey (default dict $existing.data) "tls.key") }}
{{- $ca = buildCustomCert (index $existing.data "tls.crt") (index $existing.data "tls.key") }}
{{- else }}
{{- $ca = genCA (printf "%s-ca" (include "podpatterns.fullname" .)) (int .Values.certificates.helm.caValidityDays) }}
{{- end }}
{{- $dnsNames := include "podpatterns.dnsNames" . | fromJsonArray }}
{{- $leaf := genSignedCert (index $dnsNames 2) nil $dnsNames (int .Values.certificates.helm.certValidityDays) $ca }}
{{- $_ := set .Values "__podpatternsGeneratedCerts" (dict "caCert" $ca.Cert "caKey" $ca.Key "cert" $leaf.Cert "key" $leaf.Key) }}
{{- end }}
{{- toJson (get .Values "__podpatternsGeneratedCerts") }}
{{- end }}

{{/* The base64 PEM CA the API server must trust, for modes where the chart knows it at render time. */}}
{{- define "podpatterns.caBundle" -}}
{{- if eq .Values.certificates.mode "helm" }}
{{- (include "podpatterns.helmCerts" . | fromJson).caCert | b64enc }}
{{- else if eq .Values.certificates.mode "existing" }}
{{- $bundle := required "ERROR: certificates.existing.caBundle must be the base64-encoded PEM CA that signed the serving certificate when certificates.mode is existing (e.g. base64 -w0 ca.crt)" .Values.certificates.existing.caBundle }}
{{- if not (hasPrefix "-----BEGIN CERTIFICATE-----" (b64dec $bundle | trim)) }}
{{- fail "ERROR: certificates.existing.caBundle must be a base64-encoded PEM certificate (it should decode to -----BEGIN CERTIFICATE-----...)" }}
{{- end }}
{{- $bundle }}
{{- end }}
{{- end }}

{{/*
Which namespaces and pods the API server sends to us (and the policy checks). Never our own namespace
and never kube-system & co.: otherwise a down webhook with failurePolicy Fail could block its own
pods from starting (the admission deadlock).
*/}}
{{- define "podpatterns.namespaceSelector" -}}
matchExpressions:
  - key: podpatterns.io/injection
    operator: In
    values: ["enabled"]
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ concat (list "kube-system" "kube-node-lease" "kube-public" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq | toJson }}
{{- end }}

{{- define "podpatterns.objectSelector" -}}
matchExpressions:
  # Pod-level opt-out; also carried by the webhook's own pods.
  - key: podpatterns.io/inject
    operator: NotIn
    values: ["false"]
  # Our own pods, even if their opt-out label were removed.
  - key: app.kubernetes.io/name
    operator: NotIn
    values: [{{ include "podpatterns.name" . | quote }}]
{{- end }}

{{/* Restricted securityContexts shared by the webhook and the test pod. */}}
{{- define "podpatterns.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The PromQL label matchers that pick this release's webhook series: the ServiceMonitor's job (the
Service name) in the release namespace, unless metrics.prometheusRule.seriesSelector says otherwise.
*/}}
{{- define "podpatterns.seriesSelector" -}}
{{- .Values.metrics.prometheusRule.seriesSelector | default (printf "job=%q, namespace=%q" (include "podpatterns.fullname" .) .Release.Namespace) }}
{{- end }}

{{/*
Seconds of certificate lifetime left below which PodpatternsCertificateExpiringSoon fires:
certExpiryDays, but in cert-manager mode never more than half of renewBefore (the 7-day leaf would
otherwise always be "expiring"; below half of renewBefore, a renewal is overdue).
*/}}
{{- define "podpatterns.certExpirySeconds" -}}
{{- $seconds := mul (int .Values.metrics.prometheusRule.certExpiryDays) 86400 }}
{{- if eq .Values.certificates.mode "cert-manager" }}
{{- $renewBefore := .Values.certificates.certManager.renewBefore }}
{{- $unit := get (dict "h" 3600 "m" 60 "s" 1) (regexFind "[hms]$" $renewBefore) | int }}
{{- $seconds = min $seconds (div (mul (regexFind "^[0-9]+" $renewBefore | int) $unit) 2) }}
{{- end }}
{{- $seconds }}
{{- end }}
