{{/* Names and labels. */}}
{{- define "timestamp-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "timestamp-pipeline.fullname" -}}
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

{{/* The headless Service: the pods' stable DNS names, for table routing between workers. */}}
{{- define "timestamp-pipeline.headlessName" -}}
{{- printf "%s-headless" (include "timestamp-pipeline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "timestamp-pipeline.secretName" -}}
{{- default (include "timestamp-pipeline.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "timestamp-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "timestamp-pipeline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "timestamp-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "timestamp-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "timestamp-pipeline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "timestamp-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: timestamp-pipeline
{{- end }}

{{/* Where the worker keeps its RocksDB state (the image's volume). */}}
{{- define "timestamp-pipeline.dataMountPath" -}}/var/lib/timestamp-pipeline{{- end }}
{{- define "timestamp-pipeline.apiKeysMountPath" -}}/etc/timestamp-pipeline/api-keys{{- end }}
{{- define "timestamp-pipeline.kafkaMountPath" -}}/etc/timestamp-pipeline/kafka{{- end }}
{{- define "timestamp-pipeline.postgresMountPath" -}}/etc/timestamp-pipeline/postgres{{- end }}
{{/* KEDA's name of a SASL mechanism (its kafka scaler's `sasl` parameter). */}}
{{- define "timestamp-pipeline.kedaSasl" -}}
{{- $m := .Values.kafka.security.saslMechanism -}}
{{- if eq $m "PLAIN" }}plaintext{{ else if eq $m "SCRAM-SHA-256" }}scram_sha256{{ else if eq $m "SCRAM-SHA-512" }}scram_sha512{{ else }}none{{ end -}}
{{- end }}
{{- define "timestamp-pipeline.kafkaUsesTls" -}}
{{- if or (eq .Values.kafka.security.protocol "SSL") (eq .Values.kafka.security.protocol "SASL_SSL") }}true{{ end -}}
{{- end }}
{{- define "timestamp-pipeline.kafkaUsesSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}true{{ end -}}
{{- end }}

{{/* Settings the chart sets from structured values; `config` must not repeat them. */}}
{{- define "timestamp-pipeline.checkConfig" -}}
{{- $owned := list "APP_ID" "KAFKA_BOOTSTRAP_SERVERS" "COMMAND_TOPIC" "COMMAND_TOPIC_PARTITIONS" "KAFKA_REPLICATION_FACTOR" "SHUTDOWN_TIMEOUT_SECONDS" "AUTH_PROTECT" "WORKER_DATA_DIR" "DATABASE_URL" "API_KEYS" "API_KEYS_FILE" "KAFKA_SECURITY_PROTOCOL" "KAFKA_SASL_MECHANISM" "KAFKA_SASL_USERNAME" "KAFKA_SASL_PASSWORD" "KAFKA_SASL_PASSWORD_FILE" "KAFKA_SSL_CAFILE" "KAFKA_SSL_CERTFILE" "KAFKA_SSL_KEYFILE" "KAFKA_SSL_CHECK_HOSTNAME" "KAFKA_CREATE_TOPICS" "DATABASE_PASSWORD_FILE" "KAFKA_GROUP_INSTANCE_ID" "TABLE_ROCKSDB_MEMORY_MIB" "TABLE_ROCKSDB_WRITE_BUFFER_MIB" }}
{{- range $key, $_ := .Values.config }}
{{- if has $key $owned }}
{{- fail (printf "config.%s: set it through the chart's own value, not config (see values.yaml)" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The worker's memory budget in MiB (docs/deployment.md "Memory budget"): the base, plus what the
table's RocksDB stores may hold, every partition a pod holds together (one cache, memtables charged
to it), whatever their number. */}}
{{- define "timestamp-pipeline.memoryBudgetMiB" -}}
{{- add (int .Values.memory.baseMiB) (int .Values.tableStore.rocksdbMemoryMiB) }}
{{- end }}

{{/* .Values.resources, with the memory request (the budget) and limit (budget + headroom) filled in
when not set. */}}
{{- define "timestamp-pipeline.resources" -}}
{{- $budget := include "timestamp-pipeline.memoryBudgetMiB" . | int }}
{{- $resources := deepCopy (.Values.resources | default dict) }}
{{- $requests := $resources.requests | default dict }}
{{- $limits := $resources.limits | default dict }}
{{- if not $requests.memory }}
{{- $_ := set $requests "memory" (printf "%dMi" $budget) }}
{{- end }}
{{- if not $limits.memory }}
{{- $_ := set $limits "memory" (printf "%dMi" (div (mul $budget (add 100 (int .Values.memory.limitHeadroomPercent))) 100)) }}
{{- end }}
{{- $_ := set $resources "requests" $requests }}
{{- $_ := set $resources "limits" $limits }}
{{- toYaml $resources }}
{{- end }}
