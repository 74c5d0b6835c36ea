{{/* The environment of the app's containers. */}}
{{/* Files the app reads its own secrets from (the *_FILE settings). */}}
{{- define "controlroom.secretsDir" -}}/run/secrets/controlroom{{- end }}

{{/* The environment of every Control Room container (compose's x-app block). */}}
{{- define "controlroom.env" -}}
{{- $dir := include "controlroom.secretsDir" . -}}
- name: CONTROLROOM_MODE
  value: production
- name: CONTROLROOM_DATA_DIR
  value: /data
- name: SECRET_KEY_FILE
  value: {{ $dir }}/django_secret_key
- name: ALLOWED_HOSTS
  value: {{ join "," .Values.django.allowedHosts | quote }}
{{- with .Values.django.csrfTrustedOrigins }}
- name: CSRF_TRUSTED_ORIGINS
  value: {{ join "," . | quote }}
{{- end }}
- name: TRUSTED_PROXY_COUNT
  value: {{ .Values.django.trustedProxyCount | quote }}
- name: SECURE_SSL_REDIRECT
  value: {{ .Values.django.secureSslRedirect | quote }}
- name: LOG_LEVEL
  value: {{ .Values.django.logLevel | quote }}
{{- with .Values.django.notifyBaseUrl }}
- name: NOTIFY_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.postgresql }}
{{- if .urlKey }}
- name: DATABASE_URL_FILE
  value: {{ $dir }}/database_url
{{- else }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
- name: DATABASE_URL
  value: {{ printf "postgres://%s:$(DATABASE_PASSWORD)@%s:%v/%s%s" .username .host .port .database (ternary (printf "?%s" .options) "" (not (empty .options))) | quote }}
{{- end }}
- name: DB_CONN_MAX_AGE
  value: {{ .connMaxAge | quote }}
{{- end }}
{{- with .Values.valkey }}
{{- if .urlKey }}
- name: CELERY_BROKER_URL_FILE
  value: {{ $dir }}/broker_url
{{- else if .existingSecret }}
- name: CELERY_BROKER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
- name: CELERY_BROKER_URL
  value: {{ printf "%s://:$(CELERY_BROKER_PASSWORD)@%s:%v/%v" (ternary "rediss" "redis" .tls) .host .port .db | quote }}
{{- else }}
- name: CELERY_BROKER_URL
  value: {{ printf "%s://%s:%v/%v" (ternary "rediss" "redis" .tls) .host .port .db | quote }}
{{- end }}
{{- end }}
{{- with .Values.artifactStore }}
- name: ARTIFACT_STORE_URL
  value: {{ printf "s3://%s%s" .bucket (ternary (printf "/%s" (trimAll "/" (toString .prefix))) "" (not (empty .prefix))) | quote }}
{{- with .endpoint }}
- name: ARTIFACT_STORE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: ARTIFACT_STORE_S3_REGION
  value: {{ .region | quote }}
{{- if .existingSecret }}
- name: ARTIFACT_STORE_S3_ACCESS_KEY_FILE
  value: {{ $dir }}/artifacts_s3_access_key
- name: ARTIFACT_STORE_S3_SECRET_KEY_FILE
  value: {{ $dir }}/artifacts_s3_secret_key
{{- end }}
{{- end }}
# Workspace secret references read files here only, never the server's own in {{ $dir }}.
- name: SECRET_FILE_DIRS
  value: /run/secrets/workspace
# Per pod (gunicorn's workers share it), never on the shared /data volume.
- name: PROMETHEUS_MULTIPROC_DIR
  value: /tmp/prometheus
{{- if .Values.metrics.existingSecret }}
- name: METRICS_TOKEN_FILE
  value: {{ $dir }}/metrics_token
{{- end }}
{{- with .Values.metrics.allowedNetworks }}
- name: METRICS_ALLOWED_NETWORKS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.oidc }}
{{- if .issuer }}
- name: OIDC_ISSUER
  value: {{ .issuer | quote }}
- name: OIDC_CLIENT_ID
  value: {{ .clientId | quote }}
{{- if .existingSecret }}
- name: OIDC_CLIENT_SECRET_FILE
  value: {{ $dir }}/oidc_client_secret
{{- end }}
{{- with .clientSecretVault }}
- name: OIDC_CLIENT_SECRET_VAULT
  value: {{ . | quote }}
{{- end }}
- name: OIDC_NAME
  value: {{ .name | quote }}
- name: OIDC_SCOPES
  value: {{ .scopes | quote }}
- name: OIDC_GROUPS_CLAIM
  value: {{ .groupsClaim | quote }}
- name: SSO_ONLY
  value: {{ .ssoOnly | quote }}
{{- with .breakGlassUser }}
- name: SSO_BREAK_GLASS_USER
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.vault }}
{{- if .addr }}
- name: VAULT_ADDR
  value: {{ .addr | quote }}
{{- if and .existingSecret .tokenKey }}
- name: VAULT_TOKEN_FILE
  value: {{ $dir }}/vault_token
{{- end }}
{{- with .roleId }}
- name: VAULT_ROLE_ID
  value: {{ . | quote }}
{{- end }}
{{- if and .existingSecret .secretIdKey }}
- name: VAULT_SECRET_ID_FILE
  value: {{ $dir }}/vault_secret_id
{{- end }}
{{- with .caCert }}
- name: VAULT_CACERT
  value: {{ . | quote }}
{{- end }}
- name: SECRET_VAULT_MOUNT
  value: {{ .mount | quote }}
- name: SECRET_VAULT_PATH_PREFIX
  value: {{ .pathPrefix | quote }}
{{- end }}
{{- end }}
{{- if .Values.email.existingSecret }}
- name: EMAIL_URL_FILE
  value: {{ $dir }}/email_url
{{- end }}
{{- with .Values.email.defaultFrom }}
- name: DEFAULT_FROM_EMAIL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.audit.existingSecret }}
- name: AUDIT_KEY_FILE
  value: {{ $dir }}/audit_key
{{- end }}
{{- with .Values.spark.modules }}
- name: CONTROLROOM_SPARK_MODULES
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.trino.existingSecret }}
- name: CONTROLROOM_SECRET_TRINO_SERVICE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.trino.existingSecret }}
      key: {{ .Values.trino.passwordKey }}
{{- end }}
{{- range .Values.workspaceSecrets.env }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
