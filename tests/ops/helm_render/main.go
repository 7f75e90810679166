// wsb-helm-render: renders a Helm 3 chart the way `helm template` does, for tests on a machine
// without helm. Same engine (Go text/template + sprig v3), Helm's own extra functions (include,
// tpl, required, toYaml, fromYaml, toJson, fromJson, lookup, ...), Helm's values semantics
// (values.yaml coalesced under -f files, null deletes a default, numbers decoded as float64 as
// sigs.k8s.io/yaml does), subcharts from charts/ and file:// dependencies with their values
// scoped and coalesced into the parent's .Values.<name>, missingkey=zero and "<no value>"
// removed, values checked against values.schema.json (gojsonschema, as Helm 3). Output: one "---\n# Source: CHART/templates/FILE" document per rendered template.
//
// Usage: wsb-helm-render [--release NAME] [--namespace NS] [-f values.yaml]... CHART_DIR
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	yaml "gopkg.in/yaml.v2"
)

type chartMeta struct {
	APIVersion   string       `yaml:"apiVersion"`
	Name         string       `yaml:"name"`
	Version      string       `yaml:"version"`
	AppVersion   string       `yaml:"appVersion"`
	Description  string       `yaml:"description"`
	Type         string       `yaml:"type"`
	KubeVersion  string       `yaml:"kubeVersion"`
	Dependencies []dependency `yaml:"dependencies"`
}

type dependency struct {
	Name       string `yaml:"name"`
	Version    string `yaml:"version"`
	Repository string `yaml:"repository"`
	Alias      string `yaml:"alias"`
	Condition  string `yaml:"condition"`
}

// The .Chart object as templates see it (Helm capitalises the Chart.yaml fields).
type chartObj struct {
	APIVersion, Name, Version, AppVersion, Description, Type, KubeVersion string
}

type chart struct {
	meta      chartMeta
	dir       string
	name      string // alias or name: the key of its values in the parent
	templates map[string]string
	values    map[string]interface{}
	schema    []byte // values.schema.json, or nil
	subcharts []*chart
}

type files struct{ dir string }

// Get returns a chart file's content, or "" (Helm's .Files.Get).
func (f files) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		return ""
	}
	return string(b)
}

type versionSet []string

// Has reports whether an API group/version (or group/version/Kind) is known.
func (v versionSet) Has(s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
}

type kubeVersion struct{ Version, Major, Minor, GitVersion string }

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions versionSet
}

// The API versions of a v1.29 cluster that charts commonly test for.
var defaultAPIVersions = versionSet{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "apiextensions.k8s.io/v1",
	"coordination.k8s.io/v1", "discovery.k8s.io/v1", "storage.k8s.io/v1",
}

// yamlToValues decodes YAML as Helm does (sigs.k8s.io/yaml: YAML → JSON → encoding/json), so
// maps have string keys and every number is a float64.
func yamlToValues(data []byte) (map[string]interface{}, error) {
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	j, err := json.Marshal(stringKeys(raw))
	if err != nil {
		return nil, err
	}
	var out map[string]interface{}
	if err := json.Unmarshal(j, &out); err != nil {
		return nil, fmt.Errorf("values must be a map: %v", err)
	}
	if out == nil {
		out = map[string]interface{}{}
	}
	return out, nil
}

func stringKeys(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[fmt.Sprint(k)] = stringKeys(x)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = stringKeys(t[i])
		}
	}
	return v
}

// coalesce lays dst (user values) over src (defaults), as Helm's chartutil.CoalesceTables: maps
// merge recursively, a null in dst deletes the default, anything else in dst wins.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	if dst == nil {
		dst = map[string]interface{}{}
	}
	for k, sv := range src {
		dv, ok := dst[k]
		if !ok {
			dst[k] = deepCopy(sv)
			continue
		}
		if dv == nil {
			delete(dst, k)
			continue
		}
		dm, dIsMap := dv.(map[string]interface{})
		sm, sIsMap := sv.(map[string]interface{})
		if dIsMap && sIsMap {
			dst[k] = coalesce(dm, sm)
		}
	}
	// A null the user set where no default exists is removed too.
	for k, v := range dst {
		if v == nil {
			delete(dst, k)
		}
	}
	return dst
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []interface{}:
		l := make([]interface{}, len(t))
		for i, x := range t {
			l[i] = deepCopy(x)
		}
		return l
	}
	return v
}

func loadChart(dir string) (*chart, error) {
	c := &chart{dir: dir, templates: map[string]string{}}
	meta, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(meta, &c.meta); err != nil {
		return nil, fmt.Errorf("%s/Chart.yaml: %v", dir, err)
	}
	if c.meta.Name == "" || c.meta.Version == "" || c.meta.APIVersion != "v2" {
		return nil, fmt.Errorf("%s/Chart.yaml: apiVersion v2, name and version are required", dir)
	}
	c.name = c.meta.Name
	c.values = map[string]interface{}{}
	if b, err := os.ReadFile(filepath.Join(dir, "values.yaml")); err == nil {
		if c.values, err = yamlToValues(b); err != nil {
			return nil, fmt.Errorf("%s/values.yaml: %v", dir, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "values.schema.json")); err == nil {
		c.schema = b
	}
	tdir := filepath.Join(dir, "templates")
	err = filepath.Walk(tdir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		c.templates[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// Subcharts: charts/* directories, then file:// dependencies (what `helm dependency
	// update` would copy into charts/).
	seen := map[string]bool{}
	if entries, err := os.ReadDir(filepath.Join(dir, "charts")); err == nil {
		for _, e := range entries {
			sub := filepath.Join(dir, "charts", e.Name())
			if st, err := os.Stat(sub); err != nil || !st.IsDir() {
				continue
			}
			sc, err := loadChart(sub)
			if err != nil {
				return nil, err
			}
			seen[sc.meta.Name] = true
			c.subcharts = append(c.subcharts, sc)
		}
	}
	for _, d := range c.meta.Dependencies {
		if seen[d.Name] {
			continue
		}
		if !strings.HasPrefix(d.Repository, "file://") {
			return nil, fmt.Errorf("%s: dependency %s: only file:// repositories can be rendered offline", dir, d.Name)
		}
		sc, err := loadChart(filepath.Join(dir, strings.TrimPrefix(d.Repository, "file://")))
		if err != nil {
			return nil, err
		}
		if sc.meta.Name != d.Name || (d.Version != "" && d.Version != sc.meta.Version) {
			return nil, fmt.Errorf("%s: dependency %s %s: found %s %s", dir, d.Name, d.Version, sc.meta.Name, sc.meta.Version)
		}
		if d.Alias != "" {
			sc.name = d.Alias
		}
		c.subcharts = append(c.subcharts, sc)
	}
	return c, nil
}

// scopeValues coalesces a chart's defaults under the given values and recurses into the
// subcharts, whose coalesced values end up in vals[sub.name] (and are what the subchart sees).
func scopeValues(c *chart, vals map[string]interface{}) map[string]interface{} {
	vals = coalesce(vals, c.values)
	for _, sc := range c.subcharts {
		sub, _ := vals[sc.name].(map[string]interface{})
		if g, ok := vals["global"]; ok {
			if sub == nil {
				sub = map[string]interface{}{}
			}
			if _, has := sub["global"]; !has {
				sub["global"] = deepCopy(g)
			}
		}
		vals[sc.name] = scopeValues(sc, sub)
	}
	return vals
}

// validateValues checks every chart's (coalesced, scoped) values against its values.schema.json
// with gojsonschema, as Helm 3's chartutil.ValidateAgainstSchema does; the error lists each
// chart's problems.
func validateValues(c *chart, vals map[string]interface{}) string {
	var sb strings.Builder
	if c.schema != nil {
		doc, err := json.Marshal(vals)
		if err != nil {
			return err.Error()
		}
		res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(c.schema), gojsonschema.NewBytesLoader(doc))
		if err != nil {
			return fmt.Sprintf("%s: values.schema.json: %v\n", c.name, err)
		}
		if !res.Valid() {
			sb.WriteString(c.name + ":\n")
			for _, e := range res.Errors() {
				fmt.Fprintf(&sb, "- %s\n", e)
			}
		}
	}
	for _, sc := range c.subcharts {
		sub, _ := vals[sc.name].(map[string]interface{})
		sb.WriteString(validateValues(sc, sub))
	}
	return sb.String()
}

type job struct {
	name string // template name: CHART/templates/FILE or PARENT/charts/SUB/templates/FILE
	vals map[string]interface{}
	meta chartMeta
	dir  string
}

func collect(c *chart, prefix string, vals map[string]interface{}, all map[string]string, jobs *[]job) {
	base := prefix + c.meta.Name
	for rel, text := range c.templates {
		all[base+"/"+rel] = text
		if !strings.HasPrefix(path.Base(rel), "_") {
			*jobs = append(*jobs, job{name: base + "/" + rel, vals: vals, meta: c.meta, dir: c.dir})
		}
	}
	for _, sc := range c.subcharts {
		sub, _ := vals[sc.name].(map[string]interface{})
		collect(sc, base+"/charts/", sub, all, jobs)
	}
}

func toYAML(v interface{}) string {
	// sigs.k8s.io/yaml.Marshal: JSON first, then YAML (yaml.v2) from the JSON document.
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return ""
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m, err := yamlToValues([]byte(s))
	if err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		return []interface{}{err.Error()}
	}
	j, _ := json.Marshal(stringKeys(raw))
	var a []interface{}
	if err := json.Unmarshal(j, &a); err != nil {
		return []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(s string) []interface{} {
	var a []interface{}
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return []interface{}{err.Error()}
	}
	return a
}

func required(warn string, val interface{}) (interface{}, error) {
	if val == nil {
		return val, errors.New(warn)
	}
	if s, ok := val.(string); ok && s == "" {
		return val, errors.New(warn)
	}
	return val, nil
}

// funcMap is sprig's text functions less env/expandenv, plus Helm's; include and tpl close over
// the template set being rendered (Helm's engine.initFunMap).
func funcMap(root *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	depth := 0
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["fromYamlArray"] = fromYAMLArray
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON
	f["fromJsonArray"] = fromJSONArray
	f["required"] = required
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil // helm template: no cluster, empty result
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		if depth++; depth > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		defer func() { depth-- }()
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Option("missingkey=zero").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %v", text, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	return f
}

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	var vf valueFiles
	release := flag.String("release", "release-name", "release name")
	namespace := flag.String("namespace", "default", "namespace")
	flag.Var(&vf, "f", "values file (repeatable; later files win)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wsb-helm-render [--release NAME] [--namespace NS] [-f values.yaml]... CHART_DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *release, *namespace, vf); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(dir, release, namespace string, vf []string) error {
	c, err := loadChart(dir)
	if err != nil {
		return err
	}
	user := map[string]interface{}{}
	for _, f := range vf {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		v, err := yamlToValues(b)
		if err != nil {
			return fmt.Errorf("%s: %v", f, err)
		}
		user = coalesceUser(v, user)
	}
	vals := scopeValues(c, user)
	if msg := validateValues(c, vals); msg != "" {
		return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s", msg)
	}

	all := map[string]string{}
	var jobs []job
	collect(c, "", vals, all, &jobs)

	root := template.New("gotpl")
	funcs := funcMap(root)
	root.Funcs(funcs)
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := root.New(n).Option("missingkey=zero").Parse(all[n]); err != nil {
			return fmt.Errorf("parse error in %s: %v", n, err)
		}
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].name < jobs[j].name })
	rel := map[string]interface{}{
		"Name": release, "Namespace": namespace, "Service": "Helm",
		"IsInstall": true, "IsUpgrade": false, "Revision": 1,
	}
	caps := capabilities{
		KubeVersion: kubeVersion{Version: "v1.29.0", Major: "1", Minor: "29", GitVersion: "v1.29.0"},
		APIVersions: defaultAPIVersions,
	}
	var out bytes.Buffer
	for _, j := range jobs {
		m := j.meta
		data := map[string]interface{}{
			"Values":       j.vals,
			"Release":      rel,
			"Chart":        chartObj{m.APIVersion, m.Name, m.Version, m.AppVersion, m.Description, m.Type, m.KubeVersion},
			"Capabilities": caps,
			"Files":        files{j.dir},
			"Template":     map[string]interface{}{"Name": j.name, "BasePath": path.Dir(j.name)},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, j.name, data); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.HasSuffix(j.name, "NOTES.txt") || strings.TrimSpace(text) == "" {
			continue // helm template prints neither NOTES.txt nor empty manifests
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", j.name, strings.TrimRight(text, "\n"))
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

// coalesceUser merges a later -f file over the earlier ones (Helm's mergeMaps: later wins, maps
// merge, nulls are kept so that they can delete chart defaults afterwards).
func coalesceUser(next, prev map[string]interface{}) map[string]interface{} {
	out := deepCopy(prev).(map[string]interface{})
	for k, v := range next {
		if nm, ok := v.(map[string]interface{}); ok {
			if pm, ok := out[k].(map[string]interface{}); ok {
				out[k] = coalesceUser(nm, pm)
				continue
			}
		}
		out[k] = v
	}
	return out
}
