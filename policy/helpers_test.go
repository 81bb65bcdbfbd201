package policy

import "errors"

func asParseError(err error, pe **ParseError) bool { return errors.As(err, pe) }
