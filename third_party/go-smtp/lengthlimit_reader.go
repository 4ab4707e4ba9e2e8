package smtp

import (
	"bytes"
	"errors"
	"io"
)

var ErrTooLongLine = errors.New("smtp: too long a line in input stream")

// lineLimitReader reads from the underlying Reader but restricts
// line length of lines in input stream to a certain length.
//
// If line length exceeds the limit - Read returns ErrTooLongLine
type lineLimitReader struct {
	R         io.Reader
	LineLimit int

	curLineLength int
}

func (r *lineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}

	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}

	if r.LineLimit == 0 {
		return n, nil
	}

	// sluice patch: find line ends with bytes.IndexByte rather than
	// looking at each byte; the result is the same. As before, the
	// length of a line counts its LF, which starts the next line's count.
	for rest := b[:n]; ; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			r.curLineLength += len(rest)
			if r.curLineLength > r.LineLimit {
				return 0, ErrTooLongLine
			}
			return n, nil
		}
		if r.curLineLength += i; r.curLineLength > r.LineLimit {
			return 0, ErrTooLongLine // and again at the next Read
		}
		r.curLineLength = 1 // the LF; LineLimit > 0 here
		rest = rest[i+1:]
	}
}
