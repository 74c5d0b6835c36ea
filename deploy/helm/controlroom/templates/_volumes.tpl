{{/* The volumes and mounts of the app's pods. */}}
{{/* One projected volume of the app's own secrets, each an item of an existing Secret. */}}
{{- define "controlroom.secretSources" -}}
- secret:
    name: {{ .Values.django.existingSecret }}
    items:
      - {key: {{ .Values.django.secretKeyKey }}, path: django_secret_key}
{{- if .Values.postgresql.urlKey }}
- secret:
    name: {{ .Values.postgresql.existingSecret }}
    items:
      - {key: {{ .Values.postgresql.urlKey }}, path: database_url}
{{- end }}
{{- if .Values.valkey.urlKey }}
- secret:
    name: {{ .Values.valkey.existingSecret }}
    items:
      - {key: {{ .Values.valkey.urlKey }}, path: broker_url}
{{- end }}
{{- with .Values.artifactStore }}
{{- if .existingSecret }}
- secret:
    name: {{ .existingSecret }}
    items:
      - {key: {{ .accessKeyKey }}, path: artifacts_s3_access_key}
      - {key: {{ .secretKeyKey }}, path: artifacts_s3_secret_key}
{{- end }}
{{- end }}
{{- if and .Values.oidc.issuer .Values.oidc.existingSecret }}
- secret:
    name: {{ .Values.oidc.existingSecret }}
    items:
      - {key: {{ .Values.oidc.clientSecretKey }}, path: oidc_client_secret}
{{- end }}
{{- with .Values.vault }}
{{- if and .addr .existingSecret (or .tokenKey .secretIdKey) }}
- secret:
    name: {{ .existingSecret }}
    items:
{{- if .tokenKey }}
      - {key: {{ .tokenKey }}, path: vault_token}
{{- end }}
{{- if .secretIdKey }}
      - {key: {{ .secretIdKey }}, path: vault_secret_id}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.metrics.existingSecret }}
- secret:
    name: {{ .Values.metrics.existingSecret }}
    items:
      - {key: {{ .Values.metrics.tokenKey }}, path: metrics_token}
{{- end }}
{{- if .Values.email.existingSecret }}
- secret:
    name: {{ .Values.email.existingSecret }}
    items:
      - {key: {{ .Values.email.urlKey }}, path: email_url}
{{- end }}
{{- if .Values.audit.existingSecret }}
- secret:
    name: {{ .Values.audit.existingSecret }}
    items:
      - {key: {{ .Values.audit.key }}, path: audit_key}
{{- end }}
{{- end }}

{{/* Volumes of an app pod: (dict "ctx" $ "data" true "workspace" true). */}}
{{- define "controlroom.volumes" -}}
{{- $ctx := .ctx -}}
- name: tmp
  emptyDir: {}
- name: controlroom-secrets
  projected:
    defaultMode: 0440
    sources:
      {{- include "controlroom.secretSources" $ctx | nindent 6 }}
{{- if and .workspace $ctx.Values.workspaceSecrets.existingSecrets }}
- name: workspace-secrets
  projected:
    defaultMode: 0440
    sources:
{{- range $ctx.Values.workspaceSecrets.existingSecrets }}
      - secret:
          name: {{ . }}
{{- end }}
{{- end }}
- name: data
{{- if and .data $ctx.Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "controlroom.fullname" $ctx)) $ctx.Values.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- with $ctx.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "controlroom.volumeMounts" -}}
{{- $ctx := .ctx -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
- name: controlroom-secrets
  mountPath: {{ include "controlroom.secretsDir" $ctx }}
  readOnly: true
{{- if and .workspace $ctx.Values.workspaceSecrets.existingSecrets }}
- name: workspace-secrets
  mountPath: /run/secrets/workspace
  readOnly: true
{{- end }}
{{- with $ctx.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
