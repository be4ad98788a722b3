package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Summary describes repeated measurements of one quantity: the median and
// the spread (extremes and interquartile range).
type Summary struct {
	N      int
	Median float64
	Min    float64
	Max    float64
	// Q1 and Q3 are the first and third quartiles (linear interpolation
	// between closest ranks, like R's default and numpy's "linear").
	Q1, Q3 float64
}

// Summarize computes the summary of samples. It refuses an empty set and
// NaN or infinite samples: a figure must come from real measurements.
func Summarize(samples []float64) (Summary, error) {
	if len(samples) == 0 {
		return Summary{}, errors.New("no samples")
	}
	s := slices.Clone(samples)
	for i, v := range s {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Summary{}, fmt.Errorf("sample %d is %v", i, v)
		}
	}
	slices.Sort(s)
	return Summary{
		N:      len(s),
		Median: quantile(s, 0.5),
		Min:    s[0],
		Max:    s[len(s)-1],
		Q1:     quantile(s, 0.25),
		Q3:     quantile(s, 0.75),
	}, nil
}

// quantile is the q-quantile of sorted (non-empty) data.
func quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}
