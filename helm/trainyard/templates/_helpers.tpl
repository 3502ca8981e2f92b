{{/* vim: set filetype=mustache: */}}

{{/* The chart's name, cut to 63 characters (the DNS label limit of Kubernetes names). */}}
{{- define "trainyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name. A release whose name already contains the chart name
is used as is, so that `helm install trainyard ...` does not give "trainyard-trainyard".
*/}}
{{- define "trainyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The name of one component's resources: the prefix cut so that the suffix always fits
("<prefix>-mlflow" stays within 63 characters even for a long release name).
Call as: include "trainyard.componentName" (list . "mlflow"), or with a lower limit as a
third item: a StatefulSet's name must leave room for its pods' revision hash (52).
*/}}
{{- define "trainyard.componentName" -}}
{{- $top := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $limit := 63 -}}
{{- if gt (len .) 2 }}{{ $limit = index . 2 }}{{ end -}}
{{- $max := sub (sub $limit 1) (len $suffix) | int -}}
{{- printf "%s-%s" (include "trainyard.fullname" $top | trunc $max | trimSuffix "-") $suffix -}}
{{- end -}}

{{/*
The RayCluster's name. KubeRay derives its pods' and services' names from it
("<name>-head-svc", "<name>-gpu-worker-xxxxx"), so it is kept short: 40 characters.
*/}}
{{- define "trainyard.rayClusterName" -}}
{{- printf "%s-ray" (include "trainyard.fullname" . | trunc 36 | trimSuffix "-") -}}
{{- end -}}

{{- define "trainyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the release's pods; used by the NetworkPolicies too. */}}
{{- define "trainyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trainyard.labels" -}}
{{ include "trainyard.selectorLabels" . }}
helm.sh/chart: {{ include "trainyard.chart" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainyard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component. Call as: include "trainyard.componentLabels" (list . "server") */}}
{{- define "trainyard.componentLabels" -}}
{{ include "trainyard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "trainyard.componentSelectorLabels" -}}
{{ include "trainyard.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "trainyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trainyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference: the component's own repository/tag where set, else the Trainyard image.
Call as: include "trainyard.image" (list . .Values.server.image)
*/}}
{{- define "trainyard.image" -}}
{{- $top := index . 0 -}}
{{- $own := index . 1 | default dict -}}
{{- $repo := default $top.Values.image.repository $own.repository -}}
{{- $tag := default (default $top.Chart.AppVersion $top.Values.image.tag) $own.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "trainyard.pullPolicy" -}}
{{- $top := index . 0 -}}
{{- $own := index . 1 | default dict -}}
{{- default $top.Values.image.pullPolicy $own.pullPolicy -}}
{{- end -}}

{{/* ------------------------------------------------------------------ secrets */}}

{{- define "trainyard.adminTokenSecret" -}}
{{- default (include "trainyard.componentName" (list . "admin-token")) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "trainyard.rayTokenSecret" -}}
{{- default (include "trainyard.componentName" (list . "ray-token")) .Values.ray.auth.existingSecret -}}
{{- end -}}

{{- define "trainyard.databaseSecret" -}}
{{- default (include "trainyard.componentName" (list . "database")) .Values.database.existingSecret -}}
{{- end -}}

{{/* Whether S3 credentials come from a Secret (else: the pod's identity, e.g. IRSA). */}}
{{- define "trainyard.s3HasSecret" -}}
{{- if or .Values.s3.existingSecret .Values.s3.accessKeyId -}}true{{- end -}}
{{- end -}}

{{- define "trainyard.s3Secret" -}}
{{- default (include "trainyard.componentName" (list . "s3")) .Values.s3.existingSecret -}}
{{- end -}}

{{/*
A secret value that survives upgrades: the value given, else the one already stored in the
cluster, else a new random one. (`helm template` has no cluster: it always makes a new one.)
Call as: include "trainyard.secretValue" (list . secretName key givenValue)
*/}}
{{- define "trainyard.secretValue" -}}
{{- $top := index . 0 -}}
{{- $name := index . 1 -}}
{{- $key := index . 2 -}}
{{- $given := index . 3 -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $top.Release.Namespace $name -}}
{{- if and $existing (hasKey ($existing.data | default dict) $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------ addresses */}}

{{- define "trainyard.rayDashboardUrl" -}}
{{- printf "http://%s-head-svc.%s.svc:8265" (include "trainyard.rayClusterName" .) .Release.Namespace -}}
{{- end -}}

{{- define "trainyard.mlflowUrl" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s.%s.svc:%v" (include "trainyard.componentName" (list . "mlflow")) .Release.Namespace .Values.mlflow.service.port -}}
{{- else -}}
{{- .Values.mlflow.externalUri -}}
{{- end -}}
{{- end -}}

{{- define "trainyard.postgresqlHost" -}}
{{- printf "%s.%s.svc" (include "trainyard.componentName" (list . "postgresql" 52)) .Release.Namespace -}}
{{- end -}}

{{- define "trainyard.storage" -}}
{{- default (printf "s3://%s/checkpoints" .Values.s3.bucket) .Values.server.storage -}}
{{- end -}}

{{- define "trainyard.artifactsDestination" -}}
{{- default (printf "s3://%s/mlflow" .Values.s3.bucket) .Values.mlflow.artifactsDestination -}}
{{- end -}}

{{/*
S3 settings for every pod that reads or writes the bucket (server, MLflow, Ray nodes).
*/}}
{{- define "trainyard.s3Env" -}}
{{- if .Values.s3.endpointUrl }}
- name: TRAINYARD_S3_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
# boto3, s3fs and MLflow read these, so one setting reaches every S3 client in the pod
- name: AWS_ENDPOINT_URL_S3
  value: {{ .Values.s3.endpointUrl | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- if include "trainyard.s3HasSecret" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "trainyard.s3Secret" . }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "trainyard.s3Secret" . }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/* Token auth for every Ray process: head, workers and the autoscaler sidecar. */}}
{{- define "trainyard.rayAuthEnv" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "trainyard.rayTokenSecret" . }}
      key: {{ .Values.ray.auth.existingSecretKey }}
{{- end -}}

{{/* ------------------------------------------------------------------ checks */}}

{{/*
Cross-field rules that values.schema.json cannot express. Each failure names the value,
what was given and what to do.
*/}}
{{- define "trainyard.validate" -}}
{{- range $group := list "cpu" "gpu" }}
{{- $w := index $.Values.ray.workers $group }}
{{- if $w.enabled }}
{{- if gt (int $w.minReplicas) (int $w.maxReplicas) }}
{{- fail (printf "ray.workers.%s: minReplicas (%d) must be <= maxReplicas (%d); raise maxReplicas or lower minReplicas" $group (int $w.minReplicas) (int $w.maxReplicas)) }}
{{- end }}
{{- if or (lt (int $w.replicas) (int $w.minReplicas)) (gt (int $w.replicas) (int $w.maxReplicas)) }}
{{- fail (printf "ray.workers.%s: replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" $group (int $w.replicas) (int $w.minReplicas) (int $w.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.existingSecret) (not .Values.database.external.url) }}
{{- fail "database.external.url: required when postgresql.enabled is false; set it (postgresql+psycopg://user:password@host:5432/trainyard) or name a Secret in database.existingSecret" }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) .Values.mlflow.enabled (not .Values.database.existingSecret) (not .Values.database.external.mlflowUrl) }}
{{- fail "database.external.mlflowUrl: required when postgresql.enabled is false and mlflow.enabled is true; set MLflow's own database URL, or name a Secret in database.existingSecret" }}
{{- end }}
{{- if and (not .Values.mlflow.enabled) (not .Values.mlflow.externalUri) }}
{{- fail "mlflow.externalUri: required when mlflow.enabled is false; set the URL of your MLflow tracking server" }}
{{- end }}
{{- if and .Values.s3.accessKeyId (not .Values.s3.secretAccessKey) (not .Values.s3.existingSecret) }}
{{- fail "s3.secretAccessKey: required with s3.accessKeyId; set both, or name a Secret in s3.existingSecret" }}
{{- end }}
{{- end -}}

{{/*
rayStartParams as a map of strings (KubeRay's type), `{}` when empty. Extra custom resources
are merged into the "resources" parameter, which Ray reads as JSON.
Call as: include "trainyard.rayStartParams" (dict "params" $params "resources" $extra)
*/}}
{{- define "trainyard.rayStartParams" -}}
{{- $out := dict -}}
{{- range $key, $value := .params | default dict -}}
{{- $_ := set $out $key (toString $value) -}}
{{- end -}}
{{- if .resources -}}
{{- $given := dict -}}
{{- with (index $out "resources") -}}
{{- $given = . | trimAll "'\"" | fromJson -}}
{{- end -}}
{{- $_ := set $out "resources" (merge $given .resources | toJson) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
