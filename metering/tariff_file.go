package metering

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A tariff file is YAML:
//
//	tariffs:
//	  - id: home-energy            # [A-Za-z0-9._-], unique in the file
//	    currency: EUR              # ISO 4217
//	    unit: Wh                   # the meter's base unit (for people)
//	    timezone: Europe/Berlin    # IANA zone for periods and windows; default UTC
//	    period: month              # none | day | week | month | year; default month
//	    free: 1000                 # free units per period; default 0. Per account and meter:
//	                               # every device of the account shares one allowance
//	    min_charge: 0.0001 EUR     # least charge of a ticket with usage past the free
//	                               # allowance; usage inside the allowance stays free; optional
//	    tiers:                     # graduated; or a flat "price:" and "per:" instead
//	      - {up_to: 10000, price: 0.30 EUR, per: 1000}
//	      - {price: 0.25 EUR, per: 1000}
//	    time_of_use:
//	      - {name: peak, days: [mon, tue, wed, thu, fri], from: "17:00", to: "21:00", price: 0.40 EUR, per: 1000}
//	    plausibility:              # what a reading may do before it is held; see Rules
//	      max_rate: 22000/h
//	      max_jump: 50000
//
// A price is a decimal in the tariff's currency (the currency may be
// written after it and must then match) for "per" base units (default 1).
// Days are mon…sun, or "weekdays", "weekend", "all".

// TariffSet is the tariffs of one file, by id.
type TariffSet struct {
	Tariffs []*Tariff
	byID    map[string]*Tariff
}

// Get returns the tariff with id, or nil.
func (s *TariffSet) Get(id string) *Tariff { return s.byID[id] }

// ParseTariffs parses a tariff file; name is used in errors, which read
// "NAME:LINE: FIELD: what is wrong" and wrap ErrBadTariff.
func ParseTariffs(name string, data []byte) (*TariffSet, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadTariff, name, err)
	}
	p := &tariffParser{file: name}
	set := &TariffSet{byID: map[string]*Tariff{}}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%w: %s: empty file: want a \"tariffs:\" list", ErrBadTariff, name)
	}
	doc := root.Content[0]
	var list *yaml.Node
	if err := p.fields(doc, "", map[string]func(*yaml.Node) error{
		"tariffs": func(n *yaml.Node) error { list = n; return p.kind(n, "tariffs", yaml.SequenceNode) },
	}); err != nil {
		return nil, err
	}
	if list == nil || len(list.Content) == 0 {
		return nil, p.errf(doc, "tariffs", "no tariffs")
	}
	for i, n := range list.Content {
		t, err := p.tariff(n, fmt.Sprintf("tariffs[%d]", i))
		if err != nil {
			return nil, err
		}
		if set.byID[t.ID] != nil {
			return nil, p.errf(n, fmt.Sprintf("tariffs[%d].id", i), "tariff %q is defined twice", t.ID)
		}
		set.byID[t.ID] = t
		set.Tariffs = append(set.Tariffs, t)
	}
	return set, nil
}

type tariffParser struct{ file string }

func (p *tariffParser) errf(n *yaml.Node, path, format string, args ...any) error {
	return fmt.Errorf("%w: %s:%d: %s: %s", ErrBadTariff, p.file, n.Line, path, fmt.Sprintf(format, args...))
}

func (p *tariffParser) kind(n *yaml.Node, path string, k yaml.Kind) error {
	if n.Kind != k {
		want := map[yaml.Kind]string{yaml.MappingNode: "a map", yaml.SequenceNode: "a list", yaml.ScalarNode: "a value"}[k]
		return p.errf(n, path, "want %s", want)
	}
	return nil
}

// fields walks a mapping, calling the handler of each key; unknown and
// repeated keys are errors.
func (p *tariffParser) fields(n *yaml.Node, path string, h map[string]func(*yaml.Node) error) error {
	if err := p.kind(n, strings.TrimPrefix(path, "."), yaml.MappingNode); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fp := strings.TrimPrefix(path+"."+k.Value, ".")
		f, ok := h[k.Value]
		if !ok {
			return p.errf(k, fp, "unknown field")
		}
		if seen[k.Value] {
			return p.errf(k, fp, "given twice")
		}
		seen[k.Value] = true
		if err := f(v); err != nil {
			return err
		}
	}
	return nil
}

func (p *tariffParser) str(n *yaml.Node, path string, dst *string) error {
	if err := p.kind(n, path, yaml.ScalarNode); err != nil {
		return err
	}
	*dst = n.Value
	return nil
}

func (p *tariffParser) uint(n *yaml.Node, path string, dst *uint64) error {
	if err := p.kind(n, path, yaml.ScalarNode); err != nil {
		return err
	}
	v, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 10, 64)
	if err != nil {
		return p.errf(n, path, "%q is not a whole number ≥ 0", n.Value)
	}
	*dst = v
	return nil
}

// money reads "DECIMAL" or "DECIMAL CUR" in the tariff's currency.
func (p *tariffParser) money(n *yaml.Node, path string, cur Currency, dst *Nanos) error {
	if err := p.kind(n, path, yaml.ScalarNode); err != nil {
		return err
	}
	num, c, hasCur := strings.Cut(strings.TrimSpace(n.Value), " ")
	if hasCur && Currency(strings.TrimSpace(c)) != cur {
		return p.errf(n, path, "currency %s does not match the tariff's %s", strings.TrimSpace(c), cur)
	}
	v, err := ParseNanos(num)
	if err != nil {
		return p.errf(n, path, "%v", err)
	}
	if v < 0 {
		return p.errf(n, path, "negative price %s", n.Value)
	}
	*dst = v
	return nil
}

type priceFields struct {
	price   Nanos
	per     uint64
	hasP    bool
	perNode *yaml.Node
}

func (p *tariffParser) priceHandlers(pf *priceFields, path string, cur *Currency) map[string]func(*yaml.Node) error {
	return map[string]func(*yaml.Node) error{
		"price": func(n *yaml.Node) error { pf.hasP = true; return p.money(n, path+".price", *cur, &pf.price) },
		"per": func(n *yaml.Node) error {
			pf.perNode = n
			return p.uint(n, path+".per", &pf.per)
		},
	}
}

func (pf *priceFields) resolve(p *tariffParser, n *yaml.Node, path string) (Price, error) {
	if !pf.hasP {
		return Price{}, p.errf(n, path, "no price")
	}
	if pf.perNode == nil {
		pf.per = 1
	} else if pf.per == 0 {
		return Price{}, p.errf(pf.perNode, path+".per", "per must be at least 1 unit")
	}
	return Price{Nanos: uint64(pf.price), Per: pf.per}, nil
}

func merge(a, b map[string]func(*yaml.Node) error) map[string]func(*yaml.Node) error {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// tariff reads one tariff of the file at path.
func (p *tariffParser) tariff(n *yaml.Node, path string) (*Tariff, error) {
	t := &Tariff{Period: PeriodMonth, Location: time.UTC}
	// The currency decides how prices read: find it first.
	if err := p.currencyOf(n, path, t); err != nil {
		return nil, err
	}
	var flat priceFields
	var tierNodes, touNodes *yaml.Node
	h := p.tariffFields(t, path, &tierNodes, &touNodes)
	if err := p.fields(n, path, merge(h, p.priceHandlers(&flat, path, &t.Currency))); err != nil {
		return nil, err
	}
	if t.ID == "" {
		return nil, p.errf(n, path+".id", "missing")
	}
	if t.Currency == "" {
		return nil, p.errf(n, path+".currency", "missing")
	}
	switch {
	case flat.hasP && tierNodes != nil:
		return nil, p.errf(n, path, "give either price or tiers, not both")
	case flat.hasP || flat.perNode != nil:
		pr, err := flat.resolve(p, n, path)
		if err != nil {
			return nil, err
		}
		t.Tiers = []Tier{{Price: pr}}
	case tierNodes != nil:
		if err := p.tiers(t, tierNodes, path); err != nil {
			return nil, err
		}
	default:
		return nil, p.errf(n, path, "no price: give price (and per) or tiers")
	}
	if touNodes != nil {
		if err := p.windows(t, touNodes, path); err != nil {
			return nil, err
		}
	}
	if err := t.Validate(); err != nil {
		return nil, p.errf(n, path, "%v", err)
	}
	return t, nil
}

// currencyOf sets t's currency from the tariff's mapping, if it has one.
func (p *tariffParser) currencyOf(n *yaml.Node, path string, t *Tariff) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "currency" {
			c := Currency(n.Content[i+1].Value)
			if !c.Valid() {
				return p.errf(n.Content[i+1], path+".currency", "%q is not a three-letter ISO 4217 code", c)
			}
			t.Currency = c
		}
	}
	return nil
}

// tariffFields is the table of a tariff's fields other than its flat
// price: each reads its node into t; tiers and time_of_use are kept for
// later, once the currency and price are known.
func (p *tariffParser) tariffFields(t *Tariff, path string, tierNodes, touNodes **yaml.Node) map[string]func(*yaml.Node) error {
	return map[string]func(*yaml.Node) error{
		"id": func(v *yaml.Node) error {
			if err := p.str(v, path+".id", &t.ID); err != nil {
				return err
			}
			if !validID(t.ID) {
				return p.errf(v, path+".id", "%q: use 1..64 of [A-Za-z0-9._-]", t.ID)
			}
			return nil
		},
		"currency": func(v *yaml.Node) error { return nil },
		"unit":     func(v *yaml.Node) error { return p.str(v, path+".unit", &t.Unit) },
		"timezone": func(v *yaml.Node) error {
			var z string
			if err := p.str(v, path+".timezone", &z); err != nil {
				return err
			}
			loc, err := time.LoadLocation(z)
			if err != nil || z == "" || z == "Local" {
				return p.errf(v, path+".timezone", "unknown time zone %q (want an IANA name such as Europe/Berlin)", z)
			}
			t.Location = loc
			return nil
		},
		"period": func(v *yaml.Node) error {
			for i, name := range periodNames {
				if v.Value == name {
					t.Period = Period(i)
					return nil
				}
			}
			return p.errf(v, path+".period", "%q: want none, day, week, month or year", v.Value)
		},
		"free": func(v *yaml.Node) error { return p.uint(v, path+".free", &t.Free) },
		"min_charge": func(v *yaml.Node) error {
			return p.money(v, path+".min_charge", t.Currency, &t.MinCharge)
		},
		"tiers":       func(v *yaml.Node) error { *tierNodes = v; return p.kind(v, path+".tiers", yaml.SequenceNode) },
		"time_of_use": func(v *yaml.Node) error { *touNodes = v; return p.kind(v, path+".time_of_use", yaml.SequenceNode) },
		"plausibility": func(v *yaml.Node) error {
			var err error
			t.Rules, err = p.rules(v, path+".plausibility")
			return err
		},
	}
}

// tiers reads a tariff's tiers: only the last is unlimited, each limit
// above the one before, at most MaxTiers.
func (p *tariffParser) tiers(t *Tariff, tierNodes *yaml.Node, path string) error {
	for i, tn := range tierNodes.Content {
		tp := fmt.Sprintf("%s.tiers[%d]", path, i)
		var pf priceFields
		var tier Tier
		var upNode *yaml.Node
		if err := p.fields(tn, tp, merge(map[string]func(*yaml.Node) error{
			"up_to": func(v *yaml.Node) error { upNode = v; return p.uint(v, tp+".up_to", &tier.UpTo) },
		}, p.priceHandlers(&pf, tp, &t.Currency))); err != nil {
			return err
		}
		pr, err := pf.resolve(p, tn, tp)
		if err != nil {
			return err
		}
		tier.Price = pr
		last := i == len(tierNodes.Content)-1
		switch {
		case last && upNode != nil:
			return p.errf(upNode, tp+".up_to", "the last tier has no up_to: it takes all the rest")
		case !last && upNode == nil:
			return p.errf(tn, tp+".up_to", "missing: only the last tier is unlimited")
		case !last && tier.UpTo == 0:
			return p.errf(upNode, tp+".up_to", "must be above 0")
		case i > 0 && !last && tier.UpTo <= t.Tiers[i-1].UpTo:
			return p.errf(upNode, tp+".up_to", "tiers overlap: %d is not above the previous tier's %d", tier.UpTo, t.Tiers[i-1].UpTo)
		}
		t.Tiers = append(t.Tiers, tier)
	}
	if len(t.Tiers) == 0 {
		return p.errf(tierNodes, path+".tiers", "empty")
	}
	if len(t.Tiers) > MaxTiers {
		return p.errf(tierNodes, path+".tiers", "%d tiers; at most %d", len(t.Tiers), MaxTiers)
	}
	return nil
}

// windows reads a tariff's time-of-use windows: at most MaxWindows, none
// overlapping another on a day they share.
func (p *tariffParser) windows(t *Tariff, touNodes *yaml.Node, path string) error {
	if len(touNodes.Content) > MaxWindows {
		return p.errf(touNodes, path+".time_of_use", "%d windows; at most %d", len(touNodes.Content), MaxWindows)
	}
	for i, wn := range touNodes.Content {
		w, err := p.window(wn, fmt.Sprintf("%s.time_of_use[%d]", path, i), t.Currency)
		if err != nil {
			return err
		}
		for _, o := range t.Windows {
			if o.Weekdays&w.Weekdays != 0 && o.From < w.To && w.From < o.To {
				return p.errf(wn, fmt.Sprintf("%s.time_of_use[%d]", path, i), "window %q overlaps window %q", w.Name, o.Name)
			}
		}
		t.Windows = append(t.Windows, w)
	}
	return nil
}

var dayNames = map[string]uint8{
	"sun": 1 << time.Sunday, "mon": 1 << time.Monday, "tue": 1 << time.Tuesday, "wed": 1 << time.Wednesday,
	"thu": 1 << time.Thursday, "fri": 1 << time.Friday, "sat": 1 << time.Saturday,
	"weekdays": 0b0111110, "weekend": 0b1000001, "all": 0b1111111,
}

func (p *tariffParser) window(n *yaml.Node, path string, cur Currency) (TimeOfUse, error) {
	var w TimeOfUse
	var pf priceFields
	var fromSet, toSet bool
	clock := func(v *yaml.Node, fp string, dst *uint16, set *bool) error {
		hh, mm, ok := strings.Cut(v.Value, ":")
		h, err1 := strconv.Atoi(hh)
		m, err2 := strconv.Atoi(mm)
		if !ok || err1 != nil || err2 != nil || len(mm) != 2 || h < 0 || m < 0 || m > 59 || h > 24 || h == 24 && m != 0 {
			return p.errf(v, fp, "%q: want HH:MM, 00:00 to 24:00", v.Value)
		}
		*dst, *set = uint16(h*60+m), true
		return nil
	}
	h := map[string]func(*yaml.Node) error{
		"name": func(v *yaml.Node) error {
			if err := p.str(v, path+".name", &w.Name); err != nil {
				return err
			}
			if !validID(w.Name) {
				return p.errf(v, path+".name", "%q: use 1..64 of [A-Za-z0-9._-]", w.Name)
			}
			return nil
		},
		"days": func(v *yaml.Node) error {
			items := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				items = v.Content
			}
			for _, d := range items {
				bit, ok := dayNames[strings.ToLower(d.Value)]
				if !ok || d.Kind != yaml.ScalarNode {
					return p.errf(d, path+".days", "%q: want mon…sun, weekdays, weekend or all", d.Value)
				}
				if w.Weekdays&bit != 0 {
					return p.errf(d, path+".days", "%q given twice", d.Value)
				}
				w.Weekdays |= bit
			}
			return nil
		},
		"from": func(v *yaml.Node) error { return clock(v, path+".from", &w.From, &fromSet) },
		"to":   func(v *yaml.Node) error { return clock(v, path+".to", &w.To, &toSet) },
	}
	if err := p.fields(n, path, merge(h, p.priceHandlers(&pf, path, &cur))); err != nil {
		return w, err
	}
	switch {
	case w.Name == "":
		return w, p.errf(n, path+".name", "missing")
	case w.Weekdays == 0:
		return w, p.errf(n, path+".days", "missing")
	case !fromSet || !toSet:
		return w, p.errf(n, path, "from and to are required")
	case w.From >= w.To:
		return w, p.errf(n, path, "from %s is not before to %s (a window that runs past midnight is two windows)", hhmm(w.From), hhmm(w.To))
	}
	pr, err := pf.resolve(p, n, path)
	w.Price = pr
	return w, err
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Normalize writes the set back as a tariff file with every field
// explicit, in a fixed order: what `farthing tariff check` prints.
func (s *TariffSet) Normalize() ([]byte, error) {
	type tierOut struct {
		UpTo  uint64 `yaml:"up_to,omitempty"`
		Price string `yaml:"price"`
		Per   uint64 `yaml:"per"`
	}
	type windowOut struct {
		Name  string   `yaml:"name"`
		Days  []string `yaml:"days,flow"`
		From  string   `yaml:"from"`
		To    string   `yaml:"to"`
		Price string   `yaml:"price"`
		Per   uint64   `yaml:"per"`
	}
	type tariffOut struct {
		ID        string      `yaml:"id"`
		Currency  string      `yaml:"currency"`
		Unit      string      `yaml:"unit,omitempty"`
		Timezone  string      `yaml:"timezone"`
		Period    string      `yaml:"period"`
		Free      uint64      `yaml:"free"`
		MinCharge string      `yaml:"min_charge,omitempty"`
		Tiers     []tierOut   `yaml:"tiers"`
		TimeOfUse []windowOut `yaml:"time_of_use,omitempty"`
	}
	var out struct {
		Tariffs []tariffOut `yaml:"tariffs"`
	}
	days := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	for _, t := range s.Tariffs {
		to := tariffOut{ID: t.ID, Currency: string(t.Currency), Unit: t.Unit, Timezone: t.Location.String(),
			Period: t.Period.String(), Free: t.Free}
		if t.MinCharge != 0 {
			to.MinCharge = Money{t.MinCharge, t.Currency}.String()
		}
		for _, tr := range t.Tiers {
			to.Tiers = append(to.Tiers, tierOut{UpTo: tr.UpTo, Price: priceString(tr.Price, t.Currency), Per: tr.Price.Per})
		}
		for _, w := range t.Windows {
			wo := windowOut{Name: w.Name, From: hhmm(w.From), To: hhmm(w.To), Price: priceString(w.Price, t.Currency), Per: w.Price.Per}
			for d := 1; d <= 7; d++ { // Monday first
				if w.Weekdays&(1<<(d%7)) != 0 {
					wo.Days = append(wo.Days, days[d%7])
				}
			}
			to.TimeOfUse = append(to.TimeOfUse, wo)
		}
		out.Tariffs = append(out.Tariffs, to)
	}
	return yaml.Marshal(&out)
}

func priceString(p Price, c Currency) string {
	if p.Nanos > math.MaxInt64 {
		return strconv.FormatUint(p.Nanos, 10) + " nanos " + string(c)
	}
	return Money{Nanos(p.Nanos), c}.String()
}
