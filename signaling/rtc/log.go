//go:build !js

package rtc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// slogFactory routes pion's logs into slog, so a run has one log stream and
// pion's errors about connections we are tearing down carry our context.
type slogFactory struct{ log *slog.Logger }

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return slogLogger{f.log.With("pion", scope)}
}

type slogLogger struct{ log *slog.Logger }

func (l slogLogger) at(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l slogLogger) Trace(msg string)                  {}
func (l slogLogger) Tracef(format string, args ...any) {}
func (l slogLogger) Debug(msg string)                  { l.at(slog.LevelDebug, msg) }
func (l slogLogger) Debugf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.at(slog.LevelDebug, fmt.Sprintf(format, args...))
	}
}
func (l slogLogger) Info(msg string) { l.at(slog.LevelInfo, msg) }
func (l slogLogger) Infof(format string, args ...any) {
	l.at(slog.LevelInfo, fmt.Sprintf(format, args...))
}
func (l slogLogger) Warn(msg string) { l.at(slog.LevelWarn, msg) }
func (l slogLogger) Warnf(format string, args ...any) {
	l.at(slog.LevelWarn, fmt.Sprintf(format, args...))
}
func (l slogLogger) Error(msg string) { l.at(slog.LevelError, msg) }
func (l slogLogger) Errorf(format string, args ...any) {
	l.at(slog.LevelError, fmt.Sprintf(format, args...))
}
