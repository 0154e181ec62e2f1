{{/*
Labels of every object of a component. The selector labels are the same as
in deploy/ (kubectl apply -k), so either install method can replace the other.
*/}}
{{- define "ironlb.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: ironlb
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ironlb.ccm.labels" -}}
{{ include "ironlb.labels" (dict "name" "ironlb-ccm" "root" .) }}
{{- end -}}

{{- define "ironlb.speaker.labels" -}}
{{ include "ironlb.labels" (dict "name" "ironlb-speaker" "root" .) }}
{{- end -}}

{{- define "ironlb.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/*
The --cloud-config file: .Values.ccm.cloudConfig, with speakers.port taken
from .Values.speaker.port when that is not the default. Renders nothing when
the result is empty.
*/}}
{{- define "ironlb.cloudConfig" -}}
{{- $cfg := deepCopy (.Values.ccm.cloudConfig | default dict) -}}
{{- $speakers := get $cfg "speakers" | default dict -}}
{{- $port := int .Values.speaker.port -}}
{{- if hasKey $speakers "port" -}}
{{- if ne (int $speakers.port) $port -}}
{{- fail (printf "ccm.cloudConfig.speakers.port (%v) differs from speaker.port (%v): the CCM would dial the speakers on the wrong port" $speakers.port $port) -}}
{{- end -}}
{{- else if ne $port 7473 -}}
{{- $_ := set $speakers "port" $port -}}
{{- $_ := set $cfg "speakers" $speakers -}}
{{- end -}}
{{- with $speakers.secretNamespace -}}
{{- if ne . $.Release.Namespace -}}
{{- fail (printf "ccm.cloudConfig.speakers.secretNamespace (%s) must be the release namespace (%s): the speakers mount the ConfigMap ironlb-ca-bundle from their own namespace, and their ServiceAccount there is the one the CCM accepts for enrollment" . $.Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- if $cfg -}}
{{ toYaml $cfg }}
{{- end -}}
{{- end -}}
