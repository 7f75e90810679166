{{/*
Named templates. Every template here takes a context with `.Values` (this chart's values) and
`.Release`: the chart's own root context, or, from an application chart that has wsbridge as a
dependency, `(dict "Values" .Values.wsbridge "Release" .Release)`. None of them reads `.Chart`,
so they render the same from either place.
*/}}

{{- define "wsbridge.appVersion" -}}0.1.0{{- end }}

{{- define "wsbridge.name" -}}
{{- default "wsbridge" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wsbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "wsbridge.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wsbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wsbridge.labels" -}}
{{ include "wsbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ include "wsbridge.appVersion" . | quote }}
app.kubernetes.io/component: websocket-bridge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wsbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wsbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default (include "wsbridge.appVersion" .)) }}
{{- end }}

{{/* Seconds the bridge may take to drain: ceil(config.drain_timeout_ms / 1000). */}}
{{- define "wsbridge.drainSeconds" -}}
{{- $ms := 10000 }}
{{- if hasKey .Values.config "drain_timeout_ms" }}{{ $ms = int .Values.config.drain_timeout_ms }}{{ end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/* The pod's terminationGracePeriodSeconds: preStop sleep + drain + margin. An application
pod that includes the sidecar should use at least this value. */}}
{{- define "wsbridge.terminationGracePeriodSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int (include "wsbridge.drainSeconds" .)) (int .Values.lifecycle.terminationGraceMarginSeconds) }}
{{- end }}

{{/* wsbridge.json: `config` with listen, admin and tls written from the chart's values. */}}
{{- define "wsbridge.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $bind := .Values.bindAddress | default "0.0.0.0" }}
{{- $_ := set $cfg "listen" (printf "%s:%d" $bind (int .Values.ports.ws)) }}
{{- $_ := set $cfg "admin" (dict "listen" (printf "%s:%d" $bind (int .Values.ports.admin))) }}
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert" "/etc/wsbridge/tls/tls.crt" "key" "/etc/wsbridge/tls/tls.key" "watch_interval_ms" (int .Values.tls.watchIntervalMs) }}
{{- if .Values.tls.clientCA.enabled }}
{{- $_ := set $tls "client_ca" (printf "/etc/wsbridge/client-ca/%s" .Values.tls.clientCA.key) }}
{{- end }}
{{- $_ := set $cfg "tls" $tls }}
{{- else }}
{{- $_ := unset $cfg "tls" }}
{{- end }}
{{- toPrettyJson $cfg }}
{{- end }}

{{/* Pod annotations that roll the pods when the configuration changes. */}}
{{- define "wsbridge.sidecar.annotations" -}}
checksum/wsbridge-config: {{ include "wsbridge.config" . | sha256sum }}
{{- end }}

{{/* The wsbridge container: one item of a pod's `containers` list. */}}
{{- define "wsbridge.sidecar.container" -}}
- name: wsbridge
  image: {{ include "wsbridge.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--config", "/etc/wsbridge/config/wsbridge.json"]
  ports:
    - name: wsb-ws
      containerPort: {{ int .Values.ports.ws }}
      protocol: TCP
    - name: wsb-admin
      containerPort: {{ int .Values.ports.admin }}
      protocol: TCP
  {{- if or .Values.env .Values.envFromSecrets }}
  {{- with .Values.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.envFromSecrets }}
  envFrom:
    {{- range . }}
    - secretRef:
        name: {{ . | quote }}
    {{- end }}
  {{- end }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: {{ int .Values.ports.admin }}
    periodSeconds: {{ int .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ int .Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ int .Values.ports.admin }}
    initialDelaySeconds: {{ int .Values.probes.liveness.initialDelaySeconds }}
    periodSeconds: {{ int .Values.probes.liveness.periodSeconds }}
    timeoutSeconds: {{ int .Values.probes.liveness.timeoutSeconds }}
    failureThreshold: {{ int .Values.probes.liveness.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ int .Values.ports.admin }}
    initialDelaySeconds: {{ int .Values.probes.readiness.initialDelaySeconds }}
    periodSeconds: {{ int .Values.probes.readiness.periodSeconds }}
    timeoutSeconds: {{ int .Values.probes.readiness.timeoutSeconds }}
    failureThreshold: {{ int .Values.probes.readiness.failureThreshold }}
  {{- if gt (int .Values.lifecycle.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ int .Values.lifecycle.preStopSleepSeconds }}"]
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: wsbridge-config
      mountPath: /etc/wsbridge/config
      readOnly: true
    - name: wsbridge-tmp
      mountPath: /tmp
    {{- if .Values.jwtKeys.secretName }}
    - name: wsbridge-jwt-keys
      mountPath: /etc/wsbridge/keys
      readOnly: true
    {{- end }}
    {{- if .Values.tls.enabled }}
    - name: wsbridge-tls
      mountPath: /etc/wsbridge/tls
      readOnly: true
    {{- if .Values.tls.clientCA.enabled }}
    - name: wsbridge-client-ca
      mountPath: /etc/wsbridge/client-ca
      readOnly: true
    {{- end }}
    {{- end }}
{{- end }}

{{/* The volumes the container mounts: items of a pod's `volumes` list. */}}
{{- define "wsbridge.sidecar.volumes" -}}
- name: wsbridge-config
  configMap:
    name: {{ include "wsbridge.fullname" . }}
- name: wsbridge-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- if .Values.jwtKeys.secretName }}
- name: wsbridge-jwt-keys
  secret:
    secretName: {{ .Values.jwtKeys.secretName | quote }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: wsbridge-tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled" .Values.tls.secretName | quote }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- if .Values.tls.clientCA.enabled }}
- name: wsbridge-client-ca
  secret:
    secretName: {{ .Values.tls.clientCA.secretName | default .Values.tls.secretName | quote }}
    items:
      - key: {{ .Values.tls.clientCA.key | quote }}
        path: {{ .Values.tls.clientCA.key | quote }}
{{- end }}
{{- end }}
{{- end }}
