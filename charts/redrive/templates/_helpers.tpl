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
An image reference: (dict "root" $ "image" .Values.sidecar.image). Fully qualified:
<registry>/<repository>:<tag>[@<digest>]. The registry is global.imageRegistry, else the
older top-level imageRegistry, else the image's own registry; an empty registry leaves the
repository as it is (skaffold passes whole repositories). The tag defaults to the chart's
appVersion; a digest pins the image (the tag then only documents it).
*/}}
{{- define "redrive.image" -}}
{{- $global := (.root.Values.global | default dict).imageRegistry | default "" }}
{{- $registry := $global | default .root.Values.imageRegistry | default .image.registry | default "" | trimSuffix "/" }}
{{- $repository := .image.repository }}
{{- if $registry }}
{{- $repository = printf "%s/%s" $registry $repository }}
{{- end }}
{{- $ref := printf "%s:%s" $repository (.image.tag | default .root.Chart.AppVersion | toString) }}
{{- with .image.digest }}
{{- $ref = printf "%s@%s" $ref . }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* imagePullSecrets of a pod: global.imagePullSecrets plus imagePullSecrets, as a YAML list; "" when none. */}}
{{- define "redrive.imagePullSecrets" -}}
{{- $all := concat ((.Values.global | default dict).imagePullSecrets | default list) (.Values.imagePullSecrets | default list) }}
{{- with $all }}
imagePullSecrets:
  {{- toYaml (uniq .) | nindent 2 }}
{{- end }}
{{- end }}

{{/* The service account of the chart's pods. */}}
{{- define "redrive.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "redrive.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Pod-level extras of one component (dict "root" $ "values" .Values.retryWorker): service
account, pull secrets, priority class, topology spread. Lines for a pod spec.
*/}}
{{- define "redrive.podExtras" -}}
{{- $root := .root }}
serviceAccountName: {{ include "redrive.serviceAccountName" $root }}
automountServiceAccountToken: {{ .automountToken | default false }}
{{- with include "redrive.imagePullSecrets" $root }}
{{ . }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Per-service Kafka names (isolation): two releases on one Kafka never share a topic or a
consumer group. "<prefix>.<namespace>.<release>" by default; kafka.topic overrides it.
The injector derives the same shape from a pod's namespace and app name
(injector/src/injector/naming.py), so a release named like the app, in the app's
namespace, consumes exactly what that app's injected sidecars capture.
*/}}
{{- define "redrive.kafka.topic" -}}
{{- .Values.kafka.topic | default (printf "redrive.%s.%s" .Release.Namespace .Release.Name) }}
{{- end }}
{{- define "redrive.kafka.dlqTopic" -}}
{{- .Values.kafka.dlqTopic | default (printf "%s.dlq" (include "redrive.kafka.topic" .)) }}
{{- end }}
{{- define "redrive.kafka.statusTopic" -}}
{{- .Values.kafka.statusTopic | default (printf "%s.status" (include "redrive.kafka.topic" .)) }}
{{- end }}
{{- define "redrive.retryWorker.groupId" -}}
{{- .Values.retryWorker.groupId | default (include "redrive.kafka.topic" .) }}
{{- end }}

{{/* Kafka bootstrap servers: the Strimzi cluster's bootstrap Service when the chart makes one. */}}
{{- define "redrive.kafka.bootstrapServers" -}}
{{- if .Values.kafka.strimzi.enabled }}
{{- printf "%s-kafka-bootstrap.%s.svc:%s" (include "redrive.kafka.clusterName" .) .Release.Namespace (include "redrive.kafka.strimziPort" .) }}
{{- else }}
{{- .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* min.insync.replicas from the replication factor: 1 at factor 1 or 2, else 2. */}}
{{- define "redrive.kafka.minInsyncReplicas" -}}
{{- $rf := int .Values.kafka.strimzi.replicationFactor }}
{{- if ge $rf 3 }}2{{ else }}1{{ end }}
{{- end }}

{{/*
Kafka's max.message.bytes for the chart's topics: the largest record the services write
(kafka.maxRecordBytes, 1000000 by default) plus 48588 bytes of batch and header overhead,
i.e. Kafka's own default 1048588 for the default record size.
*/}}
{{- define "redrive.kafka.maxMessageBytes" -}}
{{- add (int64 .Values.kafka.maxRecordBytes) 48588 }}
{{- end }}

{{/* Port of the Strimzi listener the services use: 9093 with TLS, 9092 without. */}}
{{- define "redrive.kafka.strimziPort" -}}
{{- if .Values.kafka.strimzi.tls }}9093{{ else }}9092{{ end }}
{{- end }}

{{/*
Name of a service's KafkaUser (and of the Secret Strimzi makes for it):
(dict "root" $ "role" "sidecar" | "retryWorker" | "operator").
*/}}
{{- define "redrive.kafka.userName" -}}
{{- if eq .role "retryWorker" }}
{{- include "redrive.retryWorker.fullname" .root }}
{{- else }}
{{- printf "%s-%s" (include "redrive.fullname" .root) .role | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Kafka TLS and SASL of one service, resolved from kafka.strimzi (the cluster the chart
makes and its KafkaUsers) or from kafka.security (an existing Kafka):
(dict "root" $ "role" "sidecar" | "retryWorker"). Renders a YAML dict (read it with
fromYaml): protocol; with SASL mechanism, username, password {name, key}; with TLS
checkHostname, and ca {kind: secret | configMap, name, key} and cert {name, certKey,
keyKey} when there are such files. Only references to Secrets and ConfigMaps: never a
secret value.
*/}}
{{- define "redrive.kafka.security" -}}
{{- $v := .root.Values }}
{{- $out := dict "protocol" "PLAINTEXT" }}
{{- if $v.kafka.strimzi.enabled }}
{{- $k := $v.kafka.strimzi }}
{{- $user := include "redrive.kafka.userName" . }}
{{- if and $k.users.enabled (eq $k.users.authentication "tls") }}
{{- if not $k.tls }}
{{- fail "kafka.strimzi.users.authentication tls (mutual TLS) needs kafka.strimzi.tls: true" }}
{{- end }}
{{- $_ := set $out "protocol" "SSL" }}
{{- $_ := set $out "cert" (dict "name" $user "certKey" "user.crt" "keyKey" "user.key") }}
{{- else if $k.users.enabled }}
{{- $_ := set $out "protocol" (ternary "SASL_SSL" "SASL_PLAINTEXT" (eq (toString $k.tls) "true")) }}
{{- $_ := set $out "mechanism" "SCRAM-SHA-512" }}
{{- $_ := set $out "username" $user }}
{{- $_ := set $out "password" (dict "name" $user "key" "password") }}
{{- else if $k.tls }}
{{- $_ := set $out "protocol" "SSL" }}
{{- end }}
{{- if $k.tls }}
{{- $_ := set $out "ca" (dict "kind" "secret" "name" (printf "%s-cluster-ca-cert" (include "redrive.kafka.clusterName" .root)) "key" "ca.crt") }}
{{- $_ := set $out "checkHostname" true }}
{{- end }}
{{- else }}
{{- $s := $v.kafka.security }}
{{- $c := index $s .role }}
{{- $where := printf "kafka.security.%s" .role }}
{{- $protocol := $s.protocol }}
{{- $_ := set $out "protocol" $protocol }}
{{- if hasPrefix "SASL_" $protocol }}
{{- if not (and $c.username $c.passwordSecret.name) }}
{{- fail (printf "kafka.security.protocol is %s: set %s.username and %s.passwordSecret.name (an existing Secret holding the password)" $protocol $where $where) }}
{{- end }}
{{- $_ := set $out "mechanism" $s.saslMechanism }}
{{- $_ := set $out "username" $c.username }}
{{- $_ := set $out "password" (dict "name" $c.passwordSecret.name "key" $c.passwordSecret.key) }}
{{- else if or $c.username $c.passwordSecret.name }}
{{- fail (printf "%s.username / passwordSecret are set, but kafka.security.protocol is %s: use SASL_SSL (or SASL_PLAINTEXT), or clear them" $where $protocol) }}
{{- end }}
{{- if has $protocol (list "SSL" "SASL_SSL") }}
{{- if and $s.caSecret.name $s.caConfigMap.name }}
{{- fail "kafka.security: set caSecret.name or caConfigMap.name, not both" }}
{{- else if $s.caSecret.name }}
{{- $_ := set $out "ca" (dict "kind" "secret" "name" $s.caSecret.name "key" $s.caSecret.key) }}
{{- else if $s.caConfigMap.name }}
{{- $_ := set $out "ca" (dict "kind" "configMap" "name" $s.caConfigMap.name "key" $s.caConfigMap.key) }}
{{- end }}
{{- with $c.clientCertSecret }}
{{- if .name }}
{{- $_ := set $out "cert" (dict "name" .name "certKey" .certKey "keyKey" .keyKey) }}
{{- end }}
{{- end }}
{{- $_ := set $out "checkHostname" $s.checkHostname }}
{{- else if or $s.caSecret.name $s.caConfigMap.name $c.clientCertSecret.name }}
{{- fail (printf "kafka.security: a CA or client certificate is set, but kafka.security.protocol is %s, which does not use TLS: use SSL or SASL_SSL, or clear them" $protocol) }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Where the Kafka credentials volume is mounted, and the files in it. */}}
{{- define "redrive.kafka.credentialsPath" -}}/etc/redrive/kafka{{- end }}

{{/*
The Kafka security env vars of one service (dict "root" $ "role" ...); nothing at all for
PLAINTEXT, so the services keep their own defaults.
*/}}
{{- define "redrive.kafka.securityEnv" -}}
{{- $sec := include "redrive.kafka.security" . | fromYaml }}
{{- $dir := include "redrive.kafka.credentialsPath" . }}
{{- if ne $sec.protocol "PLAINTEXT" -}}
- name: REDRIVE_KAFKA_SECURITY_PROTOCOL
  value: {{ $sec.protocol | quote }}
{{- if $sec.username }}
- name: REDRIVE_KAFKA_SASL_MECHANISM
  value: {{ $sec.mechanism | quote }}
- name: REDRIVE_KAFKA_SASL_USERNAME
  value: {{ $sec.username | quote }}
- name: REDRIVE_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/sasl-password" $dir | quote }}
{{- end }}
{{- if $sec.ca }}
- name: REDRIVE_KAFKA_SSL_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- if $sec.cert }}
- name: REDRIVE_KAFKA_SSL_CERT_FILE
  value: {{ printf "%s/client.crt" $dir | quote }}
- name: REDRIVE_KAFKA_SSL_KEY_FILE
  value: {{ printf "%s/client.key" $dir | quote }}
{{- end }}
{{- if hasKey $sec "checkHostname" }}
- name: REDRIVE_KAFKA_SSL_CHECK_HOSTNAME
  value: {{ $sec.checkHostname | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The read-only projected volume with a service's Kafka password, CA bundle and client
certificate (dict "root" $ "role" ... "name" <volume name>); nothing when it needs no files.
Mode 0440: the files belong to root and the pod's fsGroup, so only the service reads them.
*/}}
{{- define "redrive.kafka.securityVolume" -}}
{{- $sec := include "redrive.kafka.security" . | fromYaml }}
{{- if or $sec.password $sec.ca $sec.cert -}}
- name: {{ .name }}
  projected:
    defaultMode: 0440
    sources:
      {{- with $sec.password }}
      - secret:
          name: {{ .name }}
          items:
            - key: {{ .key }}
              path: sasl-password
      {{- end }}
      {{- with $sec.ca }}
      - {{ .kind }}:
          name: {{ .name }}
          items:
            - key: {{ .key }}
              path: ca.crt
      {{- end }}
      {{- with $sec.cert }}
      - secret:
          name: {{ .name }}
          items:
            - key: {{ .certKey }}
              path: client.crt
            - key: {{ .keyKey }}
              path: client.key
      {{- end }}
{{- end }}
{{- end }}

{{/* The mount of that volume (same context); nothing when there is no volume. */}}
{{- define "redrive.kafka.securityVolumeMount" -}}
{{- if include "redrive.kafka.securityVolume" . -}}
- name: {{ .name }}
  mountPath: {{ include "redrive.kafka.credentialsPath" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The retry worker's retry topic: kafka.retryTopic, else "<topic>.retry" (the worker's own default). */}}
{{- define "redrive.kafka.retryTopic" -}}
{{- .Values.kafka.retryTopic | default (printf "%s.retry" (include "redrive.kafka.topic" .)) }}
{{- end }}

{{/*
The retry tier topics, comma-separated, shortest delay first: "<retry topic>.<delay>".
The worker parks a record waiting for its next attempt on the tier of its delay
(redrive.retrytopics, retry_worker.policy.RetryPolicy.tiers): one tier per distinct delay
min(cap, initial * multiplier^(n-1)) for n = 1 .. maxAttempts-1, plus the cap. A delay is
named in whole seconds when exact ("2s"), else in milliseconds ("500ms"), rounded half to
even as Python does. The power is taken apart from `initial` (as Python's `**` does) so
the two agree to the last bit for the usual values; tests/chart/test_retry_tiers.py
compares them on several schedules.
*/}}
{{- define "redrive.kafka.retryTierTopics" -}}
{{- $w := .Values.retryWorker }}
{{- $retry := include "redrive.kafka.retryTopic" . }}
{{- $initial := float64 $w.backoff.initialSeconds }}
{{- $multiplier := float64 $w.backoff.multiplier }}
{{- $cap := float64 $w.backoff.maxSeconds }}
{{- if lt $cap $initial }}
{{- fail (printf "retryWorker.backoff.maxSeconds (%v) is below retryWorker.backoff.initialSeconds (%v)" $w.backoff.maxSeconds $w.backoff.initialSeconds) }}
{{- end }}
{{- $delays := list }}
{{- $power := 1.0 }}
{{- $capped := false }}
{{- range $n := until (max 0 (sub (int $w.maxAttempts) 1) | int) }}
{{- $delay := $cap }}
{{- if not $capped }}
{{- $delay = mulf $initial $power }}
{{- if ge $delay $cap }}
{{- $delay = $cap }}
{{- $capped = true }}
{{- end }}
{{- $power = mulf $power $multiplier }}
{{- end }}
{{- $delays = append $delays $delay }}
{{- end }}
{{- $delays = append $delays $cap }}
{{- $labels := list }}
{{- range $delays }}
{{- $x := mulf . 1000.0 }}
{{- $ms := floor $x }}
{{- $frac := subf $x $ms }}
{{- if or (gt $frac 0.5) (and (eq $frac 0.5) (eq (mod (int64 $ms) 2) 1)) }}
{{- $ms = addf $ms 1.0 }}
{{- end }}
{{- $ms = max 1 (int64 $ms) }}
{{- $label := ternary (printf "%ds" (div $ms 1000)) (printf "%dms" $ms) (eq (mod $ms 1000) 0) }}
{{- if not (has $label $labels) }}
{{- $labels = append $labels $label }}
{{- end }}
{{- end }}
{{- if gt (len $labels) 24 }}
{{- fail (printf "the retry worker's backoff schedule has %d distinct delays, more than 24 (one retry topic each): raise retryWorker.backoff.multiplier or lower retryWorker.maxAttempts" (len $labels)) }}
{{- end }}
{{- $topics := list }}
{{- range $labels }}
{{- $topics = append $topics (printf "%s.%s" $retry .) }}
{{- end }}
{{- join "," $topics }}
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
  value: {{ include "redrive.kafka.topic" . | quote }}
- name: REDRIVE_DLQ_TOPIC
  value: {{ include "redrive.kafka.dlqTopic" . | quote }}
- name: REDRIVE_MAX_RECORD_BYTES
  value: {{ $v.kafka.maxRecordBytes | int64 | quote }}
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
A termination grace period that covers the preStop sleep, the app's own shutdown
(sidecar.appShutdownSeconds: a native sidecar gets SIGTERM only after the app has exited),
the sidecar's drain and the producer's flush: Kubernetes' default 30 s is shorter than
that could take.
*/}}
{{- define "redrive.sidecar.terminationGracePeriodSeconds" -}}
{{- include "redrive.sidecar.init" . }}
{{- $s := .r.Values.sidecar }}
{{- add $s.preStopSleepSeconds $s.appShutdownSeconds $s.drainTimeoutSeconds 10 }}
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

{{/*
REDRIVE_STATUS_URL: the worker's status Service, when this release runs a worker; else
sidecar.statusUrl (possibly empty: no status look-ups through the sidecar).
*/}}
{{- define "redrive.sidecar.statusUrl" -}}
{{- include "redrive.sidecar.init" . }}
{{- $v := .r.Values }}
{{- if $v.sidecar.statusUrl }}
{{- $v.sidecar.statusUrl }}
{{- else if $v.retryWorker.enabled }}
{{- printf "http://%s-status.%s.svc:%v" (include "redrive.retryWorker.fullname" .r) .r.Release.Namespace $v.retryWorker.statusPort }}
{{- end }}
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
{{- $s := $r.Values.sidecar }}
{{- $kafka := dict "root" $r "role" "sidecar" "name" "redrive-kafka" -}}
- name: redrive-sidecar
  image: {{ include "redrive.image" (dict "root" $r "image" $s.image) }}
  imagePullPolicy: {{ $s.image.pullPolicy }}
  {{- if include "redrive.sidecar.native" . }}
  # A native sidecar: starts before the app containers and stops after them, so nothing
  # reaches the app unproxied and in-flight captures finish after the app has stopped.
  restartPolicy: Always
  {{- end }}
  # Prefixed names: port names are unique across a pod's containers, and your app (or an
  # injected pod) may already call its own ports "http" and "admin".
  ports:
    - name: redrive-http
      containerPort: {{ $s.port }}
      protocol: TCP
    - name: redrive-admin
      containerPort: {{ $s.adminPort }}
      protocol: TCP
  env:
    {{- include "redrive.commonEnv" $r | nindent 4 }}
    {{- with include "redrive.kafka.securityEnv" $kafka }}
    {{- . | nindent 4 }}
    {{- end }}
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
    - name: REDRIVE_BUFFERED_BODY_MAX_BYTES
      value: {{ $s.bufferedBodyMaxBytes | int64 | quote }}
    - name: REDRIVE_CLIENT_READ_TIMEOUT_SECONDS
      value: {{ $s.clientReadTimeoutSeconds | quote }}
    - name: REDRIVE_UPSTREAM_CONNECT_TIMEOUT_SECONDS
      value: {{ $s.upstreamConnectTimeoutSeconds | quote }}
    - name: REDRIVE_UPSTREAM_TIMEOUT_SECONDS
      value: {{ $s.upstreamTimeoutSeconds | quote }}
    - name: REDRIVE_DRAIN_TIMEOUT_SECONDS
      value: {{ $s.drainTimeoutSeconds | quote }}
    - name: REDRIVE_CAPTURE_METHODS
      value: {{ $s.captureMethods | quote }}
    - name: REDRIVE_CAPTURE_EXCLUDE_PATHS
      value: {{ $s.captureExcludePaths | quote }}
    # Where the sidecar writes each capture's `queued` state: the topic the worker reads.
    - name: REDRIVE_STATUS_TOPIC
      value: {{ include "redrive.kafka.statusTopic" $r | quote }}
    {{- with include "redrive.sidecar.statusUrl" . }}
    - name: REDRIVE_STATUS_URL
      value: {{ . | quote }}
    {{- end }}
    {{- if $s.spool.enabled }}
    - name: REDRIVE_SPOOL_DIR
      value: {{ $s.spool.path | quote }}
    - name: REDRIVE_SPOOL_MAX_BYTES
      value: {{ include "redrive.sidecar.spoolMaxBytes" . | quote }}
    {{- end }}
    {{- with $s.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- include "redrive.adminProbes" (dict "root" $r "port" $s.adminPort) | nindent 2 }}
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
    {{- with include "redrive.kafka.securityVolumeMount" $kafka }}
    {{- . | nindent 4 }}
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
{{- with include "redrive.kafka.securityVolume" (dict "root" .r "role" "sidecar" "name" "redrive-kafka") }}
{{ . }}
{{- end }}
{{- end }}

{{/*
The injector's template (same context as redrive.sidecar.container): what the injector
adds to a pod, as YAML. `native` says where the container goes (initContainers with
restartPolicy Always, or containers); the rest the injector adapts per pod (topic,
upstream port, capture settings, the grace period).
*/}}
{{- define "redrive.injector.template" -}}
{{- include "redrive.sidecar.init" . }}
{{- $s := .r.Values.sidecar -}}
native: {{ include "redrive.sidecar.native" . | eq "true" }}
sidecarPort: {{ $s.port }}
adminPort: {{ $s.adminPort }}
preStopSleepSeconds: {{ $s.preStopSleepSeconds }}
drainTimeoutSeconds: {{ $s.drainTimeoutSeconds }}
containers:
  {{- include "redrive.sidecar.container" . | nindent 2 }}
volumes:
  {{- include "redrive.sidecar.volumes" . | nindent 2 }}
{{- end }}
