package artifact

import "os"

func namedThenRemoved(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "nixoci-nar-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}
