{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "storj-registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: <release>-<chart> unless the release name already holds it. */}}
{{- define "storj-registry.fullname" -}}
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

{{- define "storj-registry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "storj-registry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "storj-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The service's pods (not the gc or sync jobs' pods, which share the selector labels): what Services and the
budget select. The Deployment keeps selecting by the selector labels alone: a selector cannot change in place. */}}
{{- define "storj-registry.podSelectorLabels" -}}
{{ include "storj-registry.selectorLabels" . }}
app.kubernetes.io/component: registry
{{- end }}

{{- define "storj-registry.labels" -}}
{{ include "storj-registry.releaseLabels" . }}
app.kubernetes.io/component: registry
{{- end }}

{{/* The labels of every object, but its component. */}}
{{- define "storj-registry.releaseLabels" -}}
helm.sh/chart: {{ include "storj-registry.chart" . }}
{{ include "storj-registry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "storj-registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "storj-registry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding S3 credentials and the htpasswd file: ours, or the one the user brings. */}}
{{- define "storj-registry.secretName" -}}
{{- default (include "storj-registry.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Whether the chart has anything to put in a Secret of its own. */}}
{{- define "storj-registry.createSecret" -}}
{{- if and (not .Values.existingSecret) (or (eq .Values.storage.type "s3") .Values.auth.htpasswd.enabled .Values.auth.tokenKey .Values.auth.access .Values.events.endpoints) }}true{{ end }}
{{- end }}

{{- define "storj-registry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "storj-registry.stagingClaimName" -}}
{{- default (printf "%s-staging" (include "storj-registry.fullname" .)) .Values.staging.persistence.existingClaim }}
{{- end }}

{{/* Staging is shared between pods only on a ReadWriteMany claim. */}}
{{- define "storj-registry.sharedStaging" -}}
{{- if and .Values.staging.persistence.enabled (eq .Values.staging.persistence.accessMode "ReadWriteMany") }}true{{ end }}
{{- end }}

{{/* More than one pod can serve requests at a time. */}}
{{- define "storj-registry.multiPod" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* A switch set to true, false or `auto` (on when more than one pod can run): `list value $`. */}}
{{- define "storj-registry.switch" -}}
{{- $mode := toString (index . 0) }}
{{- if or (eq $mode "true") (and (eq $mode "auto") (include "storj-registry.multiPod" (index . 1))) }}true{{ end }}
{{- end }}

{{/* The pods know each other (REGISTRY_PEERS) and forward each repository's requests to the pod that owns it. */}}
{{- define "storj-registry.peers" -}}
{{- include "storj-registry.switch" (list .Values.peers.enabled .) }}
{{- end }}

{{/* The headless Service the pods find each other by, and the chart's Secret holding their shared secret. */}}
{{- define "storj-registry.peersName" -}}
{{- printf "%s-peers" (include "storj-registry.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "storj-registry.peerSecretName" -}}
{{- default (include "storj-registry.peersName" .) .Values.peers.existingSecret }}
{{- end }}

{{/* The port the container listens on (REGISTRY_LISTEN_PORT's default), which peers reach directly. */}}
{{- define "storj-registry.containerPort" -}}
5000
{{- end }}

{{/*
Session affinity of the Service. `auto` pins a client to one pod only when several pods run that neither
forward to each other (peers) nor share a staging volume, so that the chunks of one upload land where the
upload was started.
*/}}
{{- define "storj-registry.sessionAffinity" -}}
{{- $mode := .Values.service.sessionAffinity }}
{{- if eq $mode "auto" }}
{{- if and (include "storj-registry.multiPod" .) (not (include "storj-registry.peers" .)) (not (include "storj-registry.sharedStaging" .)) }}ClientIP{{ else }}None{{ end }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/* URL scheme the pod itself serves. */}}
{{- define "storj-registry.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* The REGISTRY_* variables naming the store and the staging directory: the service's, and sync's too. */}}
{{/* The lifecycle policy file, mounted from the chart's ConfigMap (the service and gc read the same one). */}}
{{- define "storj-registry.policyEnv" -}}
{{- if .Values.policy }}
- name: REGISTRY_POLICY
  value: /etc/storj-registry/policy/policy.yaml
{{- end }}
{{- end }}

{{- define "storj-registry.policyMount" -}}
{{- if .Values.policy }}
- name: policy
  mountPath: /etc/storj-registry/policy
  readOnly: true
{{- end }}
{{- end }}

{{- define "storj-registry.policyVolume" -}}
{{- if .Values.policy }}
- name: policy
  configMap:
    name: {{ include "storj-registry.fullname" . }}-policy
{{- end }}
{{- end }}

{{- define "storj-registry.storageEnv" -}}
- name: REGISTRY_STORAGE
  value: {{ .Values.storage.type | quote }}
- name: REGISTRY_STAGING_DIR
  value: {{ .Values.staging.mountPath | quote }}
{{- if eq .Values.storage.type "filesystem" }}
- name: REGISTRY_DATA_DIR
  value: {{ .Values.storage.filesystem.dataDir | quote }}
{{- else }}
- name: REGISTRY_S3_ENDPOINT
  value: {{ .Values.storage.s3.endpoint | quote }}
- name: REGISTRY_S3_BUCKET
  value: {{ .Values.storage.s3.bucket | quote }}
- name: REGISTRY_S3_PREFIX
  value: {{ .Values.storage.s3.prefix | quote }}
- name: REGISTRY_S3_REGION
  value: {{ .Values.storage.s3.region | quote }}
- name: REGISTRY_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "storj-registry.secretName" . }}
      key: {{ .Values.secretKeys.s3AccessKey }}
- name: REGISTRY_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "storj-registry.secretName" . }}
      key: {{ .Values.secretKeys.s3SecretKey }}
{{- end }}
{{- end }}
