{{/*
Names and labels, after the prometheus-community charts.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "redrive.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 characters (the DNS label limit); the release name
alone when it already contains the chart name.
*/}}
{{- define "redrive.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "redrive.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release, so never add anything that changes. */}}
{{- define "redrive.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redrive.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels of every object. */}}
{{- define "redrive.labels" -}}
helm.sh/chart: {{ include "redrive.chart" . }}
{{ include "redrive.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redrive
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "retry-worker"). */}}
{{- define "redrive.componentLabels" -}}
{{ include "redrive.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "retry-worker"). */}}
{{- define "redrive.componentSelectorLabels" -}}
{{ include "redrive.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object names of the components. */}}
{{- define "redrive.backend.fullname" -}}
{{- printf "%s-backend" (include "redrive.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "redrive.retryWorker.fullname" -}}
{{- printf "%s-retry-worker" (include "redrive.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "redrive.kafka.clusterName" -}}
{{- default (include "redrive.fullname" .) .Values.kafka.strimzi.clusterName | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- define "redrive.keys.secretName" -}}
{{- default (printf "%s-keys" (include "redrive.fullname" .)) .Values.keys.existingSecret }}
{{- end }}

{{/*
An image reference: (dict "root" $ "image" .Values.sidecar.image). The tag defaults to the
chart's appVersion; imageRegistry, when set, is put in front of the repository.
*/}}
{{- define "redrive.image" -}}
{{- $registry := .root.Values.imageRegistry | default "" | trimSuffix "/" }}
{{- $repository := .image.repository }}
{{- if $registry }}
{{- $repository = printf "%s/%s" $registry $repository }}
{{- end }}
{{- printf "%s:%s" $repository (.image.tag | default .root.Chart.AppVersion | toString) }}
{{- end }}

{{/* Kafka bootstrap servers: the Strimzi cluster's bootstrap Service when the chart makes one. */}}
{{- define "redrive.kafka.bootstrapServers" -}}
{{- if .Values.kafka.strimzi.enabled }}
{{- printf "%s-kafka-bootstrap.%s.svc:9092" (include "redrive.kafka.clusterName" .) .Release.Namespace }}
{{- else }}
{{- .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* The retry worker's retry topic: kafka.retryTopic, else "<topic>.retry" (the worker's own default). */}}
{{- define "redrive.kafka.retryTopic" -}}
{{- .Values.kafka.retryTopic | default (printf "%s.retry" .Values.kafka.topic) }}
{{- end }}

{{/* Where the worker replays: targetUrl, else the demo backend Service (its sidecar port). */}}
{{- define "redrive.retryWorker.targetUrl" -}}
{{- if .Values.retryWorker.targetUrl }}
{{- .Values.retryWorker.targetUrl }}
{{- else if .Values.backend.enabled }}
{{- printf "http://%s.%s.svc:%v" (include "redrive.backend.fullname" .) .Release.Namespace .Values.backend.service.port }}
{{- else }}
{{- fail "retryWorker.targetUrl is required when backend.enabled is false: set it to your service's URL (its Service, which targets the sidecar port)" }}
{{- end }}
{{- end }}

{{/*
Bytes in a Kubernetes quantity with a binary or decimal suffix ("1Gi" -> 1073741824).
Only whole numbers: the spool size is a disk size, not a fraction.
*/}}
{{- define "redrive.quantityBytes" -}}
{{- $q := toString . }}
{{- if not (regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q) }}
{{- fail (printf "%q is not a whole-number quantity such as 512Mi or 1Gi" $q) }}
{{- end }}
{{- $number := regexFind "^[0-9]+" $q }}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- mul (int64 $number) (get $units (trimPrefix $number $q) | int64) }}
{{- end }}

{{/*
Env vars every Redrive service shares (Kafka, topics, logging, redaction, keys, pod
identity). Context: the chart root, or the sidecar's stand-in for it.
*/}}
{{- define "redrive.commonEnv" -}}
{{- $v := .Values -}}
- name: REDRIVE_KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "redrive.kafka.bootstrapServers" . | quote }}
- name: REDRIVE_TOPIC
  value: {{ $v.kafka.topic | quote }}
- name: REDRIVE_DLQ_TOPIC
  value: {{ $v.kafka.dlqTopic | quote }}
- name: REDRIVE_LOG_LEVEL
  value: {{ $v.log.level | quote }}
- name: REDRIVE_LOG_FORMAT
  value: {{ $v.log.format | quote }}
- name: REDRIVE_REDACT_HEADERS
  value: {{ $v.redactHeaders | quote }}
{{- if $v.keys.signing }}
- name: REDRIVE_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "redrive.keys.secretName" . }}
      key: {{ $v.keys.signingKeyName }}
{{- end }}
{{- if $v.keys.seal }}
- name: REDRIVE_SEAL_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "redrive.keys.secretName" . }}
      key: {{ $v.keys.sealKeyName }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* Probes on an admin port: (dict "root" $ "port" "admin"). */}}
{{- define "redrive.adminProbes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  {{- toYaml $p.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  {{- toYaml $p.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  {{- toYaml $p.readiness | nindent 2 }}
{{- end }}

{{/*
A preStop pause, so endpoint controllers stop routing to the pod before SIGTERM starts the
drain: (dict "root" $ "seconds" 5). The sleep action is on by default from Kubernetes 1.30;
older clusters run the image's /bin/sleep.
*/}}
{{- define "redrive.preStopSleep" -}}
{{- if gt (int .seconds) 0 -}}
lifecycle:
  preStop:
    {{- if semverCompare ">=1.30-0" .root.Capabilities.KubeVersion.Version }}
    sleep:
      seconds: {{ .seconds }}
    {{- else }}
    exec:
      command: ["sleep", "{{ .seconds }}"]
    {{- end }}
{{- end }}
{{- end }}

{{/*
==========================================================================================
The sidecar, for your own Deployments
==========================================================================================

Context for every template below: a dict with
  "root"  the top-level context ($) of the chart that renders the pod (for .Capabilities,
          .Release and .Chart);
  "values" (optional) the redrive values: $.Values.redrive when redrive is a subchart
          (dependency) of your chart; $.Values when omitted (this chart's own templates);
  "spoolVolume" (optional, redrive.sidecar.volumes) false when a StatefulSet's
          volumeClaimTemplates provide the "redrive-spool" volume.

A pod spec uses them like this (see charts/redrive/README.md):

  {{- $redrive := dict "root" $ "values" .Values.redrive }}
  spec:
    terminationGracePeriodSeconds: {{ include "redrive.sidecar.terminationGracePeriodSeconds" $redrive }}
    {{- if include "redrive.sidecar.native" $redrive }}
    initContainers:
      {{- include "redrive.sidecar.container" $redrive | nindent 6 }}
    {{- end }}
    containers:
      - name: app
        ...
      {{- if not (include "redrive.sidecar.native" $redrive) }}
      {{- include "redrive.sidecar.container" $redrive | nindent 6 }}
      {{- end }}
    volumes:
      {{- include "redrive.sidecar.volumes" $redrive | nindent 6 }}
*/}}

{{/*
Normalise a sidecar context once (idempotent): sets .r, a stand-in for the redrive chart's
own root context. When redrive is a subchart, names (Kafka cluster, key Secret, spool
claim) and the default image tag must come from the subchart, not from the parent chart
whose context the caller passed, so .r carries the subchart's values, chart name and
appVersion with the caller's Release and Capabilities.
*/}}
{{- define "redrive.sidecar.init" -}}
{{- if not (hasKey . "r") }}
{{- if .values }}
{{- $appVersion := .root.Chart.AppVersion }}
{{- if and (ne .root.Chart.Name "redrive") (hasKey (.root.Subcharts | default dict) "redrive") }}
{{- $appVersion = .root.Subcharts.redrive.Chart.AppVersion }}
{{- end }}
{{- $_ := set . "r" (dict "Values" .values "Chart" (dict "Name" "redrive" "AppVersion" $appVersion) "Release" .root.Release "Capabilities" .root.Capabilities) }}
{{- else }}
{{- $_ := set . "r" .root }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the sidecar renders as a native sidecar (init container with restartPolicy
Always: beta and on by default from Kubernetes 1.29), "" otherwise.
*/}}
{{- define "redrive.sidecar.native" -}}
{{- include "redrive.sidecar.init" . }}
{{- if and .r.Values.sidecar.nativeSidecar (semverCompare ">=1.29-0" .r.Capabilities.KubeVersion.Version) }}true{{ end }}
{{- end }}

{{/*
A termination grace period that covers the preStop sleep, the drain and the producer's
flush: Kubernetes' default 30 s is shorter than a drain plus a flush could take.
*/}}
{{- define "redrive.sidecar.terminationGracePeriodSeconds" -}}
{{- include "redrive.sidecar.init" . }}
{{- $s := .r.Values.sidecar }}
{{- add $s.preStopSleepSeconds $s.drainTimeoutSeconds 10 }}
{{- end }}

{{/* REDRIVE_SPOOL_MAX_BYTES: the value, or 90 % of the volume size; never above the size. */}}
{{- define "redrive.sidecar.spoolMaxBytes" -}}
{{- include "redrive.sidecar.init" . }}
{{- $spool := .r.Values.sidecar.spool }}
{{- $size := include "redrive.quantityBytes" $spool.size | int64 }}
{{- $max := $spool.maxBytes | int64 }}
{{- if eq $max 0 }}
{{- $max = div (mul $size 9) 10 }}
{{- else if gt $max $size }}
{{- fail (printf "sidecar.spool.maxBytes (%d) exceeds sidecar.spool.size (%s = %d bytes): the kubelet would evict the pod before the spool cap is reached" $max $spool.size $size) }}
{{- end }}
{{- $max }}
{{- end }}

{{/* Name of the spool claim: the existing one, or the one the chart makes for the demo. */}}
{{- define "redrive.sidecar.spoolClaimName" -}}
{{- include "redrive.sidecar.init" . }}
{{- default (printf "%s-spool" (include "redrive.fullname" .r)) .r.Values.sidecar.spool.persistence.existingClaim }}
{{- end }}

{{/* The sidecar container: one list item, for `containers` or (native) `initContainers`. */}}
{{- define "redrive.sidecar.container" -}}
{{- include "redrive.sidecar.init" . }}
{{- $r := .r }}
{{- $s := $r.Values.sidecar -}}
- name: redrive-sidecar
  image: {{ include "redrive.image" (dict "root" $r "image" $s.image) }}
  imagePullPolicy: {{ $s.image.pullPolicy }}
  {{- if include "redrive.sidecar.native" . }}
  # A native sidecar: starts before the app containers and stops after them, so nothing
  # reaches the app unproxied and in-flight captures finish after the app has stopped.
  restartPolicy: Always
  {{- end }}
  ports:
    - name: http
      containerPort: {{ $s.port }}
      protocol: TCP
    - name: admin
      containerPort: {{ $s.adminPort }}
      protocol: TCP
  env:
    {{- include "redrive.commonEnv" $r | nindent 4 }}
    - name: REDRIVE_LISTEN_HOST
      value: "0.0.0.0"
    - name: REDRIVE_LISTEN_PORT
      value: {{ $s.port | quote }}
    - name: REDRIVE_ADMIN_HOST
      value: "0.0.0.0"
    - name: REDRIVE_ADMIN_PORT
      value: {{ $s.adminPort | quote }}
    - name: REDRIVE_UPSTREAM_URL
      value: {{ $s.upstreamUrl | quote }}
    - name: REDRIVE_CAPTURE_STATUSES
      value: {{ $s.captureStatuses | quote }}
    - name: REDRIVE_FAILURE_RESPONSE
      value: {{ $s.failureResponse | quote }}
    - name: REDRIVE_RETRY_AFTER_SECONDS
      value: {{ $s.retryAfterSeconds | quote }}
    - name: REDRIVE_PUBLISH_TIMEOUT_SECONDS
      value: {{ $s.publishTimeoutSeconds | quote }}
    - name: REDRIVE_MAX_BODY_BYTES
      value: {{ $s.maxBodyBytes | int64 | quote }}
    - name: REDRIVE_CLIENT_READ_TIMEOUT_SECONDS
      value: {{ $s.clientReadTimeoutSeconds | quote }}
    - name: REDRIVE_UPSTREAM_CONNECT_TIMEOUT_SECONDS
      value: {{ $s.upstreamConnectTimeoutSeconds | quote }}
    - name: REDRIVE_UPSTREAM_TIMEOUT_SECONDS
      value: {{ $s.upstreamTimeoutSeconds | quote }}
    - name: REDRIVE_DRAIN_TIMEOUT_SECONDS
      value: {{ $s.drainTimeoutSeconds | quote }}
    {{- if $s.spool.enabled }}
    - name: REDRIVE_SPOOL_DIR
      value: {{ $s.spool.path | quote }}
    - name: REDRIVE_SPOOL_MAX_BYTES
      value: {{ include "redrive.sidecar.spoolMaxBytes" . | quote }}
    {{- end }}
    {{- with $s.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- include "redrive.adminProbes" (dict "root" $r "port" "admin") | nindent 2 }}
  {{- include "redrive.preStopSleep" (dict "root" $r "seconds" $s.preStopSleepSeconds) | nindent 2 }}
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    {{- toYaml $r.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: redrive-tmp
      mountPath: /tmp
    {{- if $s.spool.enabled }}
    - name: redrive-spool
      mountPath: {{ $s.spool.path }}
    {{- end }}
{{- end }}

{{/*
The sidecar's volumes: list items for the pod's `volumes`. A StatefulSet that brings its
own `volumeClaimTemplates` entry named "redrive-spool" (one claim per pod) passes
"spoolVolume" false in the context to leave the spool volume out.
*/}}
{{- define "redrive.sidecar.volumes" -}}
{{- include "redrive.sidecar.init" . }}
{{- $s := .r.Values.sidecar -}}
- name: redrive-tmp
  emptyDir:
    sizeLimit: {{ $s.tmpSizeLimit }}
{{- if and $s.spool.enabled (not (and (hasKey . "spoolVolume") (not .spoolVolume))) }}
- name: redrive-spool
  {{- if $s.spool.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "redrive.sidecar.spoolClaimName" . }}
  {{- else }}
  # Survives container restarts, not pod deletion; SIGTERM drains it to Kafka first.
  emptyDir:
    sizeLimit: {{ $s.spool.size }}
  {{- end }}
{{- end }}
{{- end }}
