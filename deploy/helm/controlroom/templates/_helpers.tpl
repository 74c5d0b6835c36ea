{{/* Names and labels. */}}
{{- define "controlroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "controlroom.fullname" -}}
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

{{- define "controlroom.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "controlroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: controlroom
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "web"). */}}
{{- define "controlroom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "controlroom.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "controlroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "controlroom.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "image" .Values.image "key" "image" "ctx" $). */}}
{{- define "controlroom.image" -}}
{{- $repository := required (printf "%s.repository is required: the Control Room image to run (see the repository's Dockerfile)" .key) .image.repository }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .ctx.Chart.AppVersion .image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Fails rendering, with one sentence, when a mandatory value is missing or wrong. */}}
{{- define "controlroom.validate" -}}
{{- $ := . }}
{{- $_ := required "django.existingSecret is required: the name of an existing Secret holding Django's SECRET_KEY (README.md)" .Values.django.existingSecret }}
{{- if not .Values.django.allowedHosts }}
{{- fail "django.allowedHosts is required: the host names Control Room is served as (ALLOWED_HOSTS)" }}
{{- end }}
{{- $_ = required "postgresql.existingSecret is required: the name of an existing Secret with the database password (or URL)" .Values.postgresql.existingSecret }}
{{- if not .Values.postgresql.urlKey }}
{{- $_ = required "postgresql.host is required (or postgresql.urlKey, to read the whole DATABASE_URL from the Secret)" .Values.postgresql.host }}
{{- end }}
{{- if not .Values.valkey.urlKey }}
{{- $_ = required "valkey.host is required (or valkey.urlKey with valkey.existingSecret): the Celery broker" .Values.valkey.host }}
{{- else if not .Values.valkey.existingSecret }}
{{- fail "valkey.urlKey needs valkey.existingSecret: the Secret that holds the broker URL" }}
{{- end }}
{{- $_ = required "artifactStore.bucket is required: the S3 bucket of the artifact store" .Values.artifactStore.bucket }}
{{- if and .Values.oidc.issuer (not .Values.oidc.existingSecret) (not .Values.oidc.clientSecretVault) }}
{{- fail "oidc.existingSecret is required with oidc.issuer: the existing Secret holding the client secret (or set oidc.clientSecretVault)" }}
{{- end }}
{{- if and .Values.oidc.ssoOnly (not .Values.oidc.issuer) }}
{{- fail "oidc.ssoOnly needs oidc.issuer: nobody could sign in" }}
{{- end }}
{{- range .Values.workspaceSecrets.env }}
{{- if not (regexMatch "^CONTROLROOM_SECRET_[A-Z0-9_]+$" (toString .name)) }}
{{- fail (printf "workspaceSecrets.env: %q must start with CONTROLROOM_SECRET_ (secret references read no other variable)" (toString .name)) }}
{{- end }}
{{- if not (and .secret .key) }}
{{- fail (printf "workspaceSecrets.env: %s needs secret and key (an existing Secret)" .name) }}
{{- end }}
{{- end }}
{{- range $queue, $worker := .Values.workers }}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$" $queue) }}
{{- fail (printf "workers.%s: a queue name must be a short DNS label (a-z, 0-9, -)" $queue) }}
{{- end }}
{{- if not (has (toString $worker.image) (list "app" "spark")) }}
{{- fail (printf "workers.%s.image must be app or spark" $queue) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Host header of the web probes: Django checks it against ALLOWED_HOSTS (as compose's healthcheck). */}}
{{- define "controlroom.probeHost" -}}
{{- $host := first .Values.django.allowedHosts | toString | trimPrefix "." }}
{{- if or (eq $host "*") (eq $host "") }}localhost{{ else }}{{ $host }}{{ end }}
{{- end }}

{{/* What every app pod spec shares (after containers). */}}
{{- define "controlroom.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "controlroom.podMetadata" -}}
labels:
  {{- include "controlroom.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 2 }}
  {{- with .ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .ctx.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* An HTTP probe of the web container: (dict "ctx" $ "path" "/healthz" "timing" .Values.web.livenessProbe).
The Host header passes Django's ALLOWED_HOSTS check; X-Forwarded-Proto marks the probe as already
HTTPS (TLS ends at the ingress), as compose's healthcheck does. */}}
{{- define "controlroom.webProbe" -}}
httpGet:
  path: {{ .path }}
  port: 8000
  httpHeaders:
    - name: Host
      value: {{ include "controlroom.probeHost" .ctx | quote }}
    - name: X-Forwarded-Proto
      value: https
{{ toYaml .timing }}
{{- end }}
